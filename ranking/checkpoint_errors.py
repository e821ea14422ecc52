"""Errors of checkpoint loading, in a module without torch so the CLI can name them cheaply."""

from __future__ import annotations


class CheckpointLoadError(RuntimeError):
    """A checkpoint cannot be loaded: it does not fit the model/optimizer it is loaded into
    (names or shapes), or it is malformed. The CLI reports it as bad input (exit status 2)."""


class UnsafeCheckpointError(CheckpointLoadError):
    """A checkpoint holds something that is never loaded because loading it could run code: a
    pickle (an old-format ``extra_state.pt``, a tensor file or DCP metadata that needs an
    arbitrary Python object). See docs/threat_model.md."""
