"""Reading a DCP checkpoint without running code from it (docs/threat_model.md).

``torch.distributed.checkpoint`` keeps its global layout in ``.metadata``, a plain pickle that
``FileSystemReader`` loads with ``pickle.load``, and loads every non-tensor entry of a state
dict with ``torch.load(weights_only=False)``: a planted checkpoint would run whatever code it
carries. Here the metadata is read by an unpickler that builds only DCP's own metadata classes
(and the few torch values inside them), its storage entries must name files inside the
checkpoint folder, and non-tensor entries go through ``torch.load(weights_only=True)``. The
tensors themselves DCP already reads with ``weights_only=True``.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path, PurePath
from typing import Any

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem

from ranking.checkpoint_errors import CheckpointLoadError, UnsafeCheckpointError

METADATA_FILE = ".metadata"

# Everything a DCP ``.metadata`` pickle references (torch 2.13): the metadata dataclasses, the
# storage entries, and the torch values inside them (sizes, layouts, dtypes, paths). None of
# them does more than hold the values it is given.
_ALLOWED = {
    *(("torch.distributed.checkpoint.metadata", name) for name in (
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "TensorProperties",
        "ChunkStorageMetadata", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # a dict lookup by name: "torch.strided" -> layout
    *(("pathlib", name) for name in ("Path", "PosixPath", "WindowsPath", "PurePosixPath",
                                     "PureWindowsPath")),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Builds only the allowed classes; any other global (``os.system``, ``builtins.eval``,
    a class with a malicious ``__reduce__``) stops the load before it is called."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (
                module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which a DCP metadata file "
                                     "never holds")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("holds a persistent id, which a DCP metadata file never has")


def read_metadata(checkpoint: str | os.PathLike) -> Metadata:
    """The DCP metadata of ``checkpoint``, read without running code from it.

    Raises:
        UnsafeCheckpointError: the file needs anything but DCP's metadata classes, or a storage
            entry names a file outside the checkpoint folder.
        CheckpointLoadError: the file is missing or not DCP metadata.
    """
    path = Path(checkpoint) / METADATA_FILE
    try:
        with path.open("rb") as fh:
            metadata = _MetadataUnpickler(fh).load()
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(f"{path}: refused, {err}; a checkpoint is never loaded "
                                    "through a pickle that could run code") from None
    except Exception as err:  # truncated or garbage bytes raise many types
        raise CheckpointLoadError(f"{path}: not DCP checkpoint metadata "
                                  f"({type(err).__name__}: {err})") from None
    if not isinstance(metadata, Metadata) or not isinstance(metadata.storage_data, dict):
        raise CheckpointLoadError(f"{path}: not DCP checkpoint metadata "
                                  f"(holds a {type(metadata).__name__})")
    for info in metadata.storage_data.values():
        name = getattr(info, "relative_path", None)
        # DCP writes flat file names (__0_0.distcp); anything else would read another file.
        if not isinstance(name, str) or PurePath(name).name != name or name in ("", ".", ".."):
            raise UnsafeCheckpointError(f"{path}: refused, a storage entry names {name!r}, "
                                        "which is not a file of this checkpoint folder")
    return metadata


class SafeReader(FileSystemReader):
    """A ``FileSystemReader`` that returns metadata already read by ``read_metadata``."""

    def __init__(self, checkpoint: str | os.PathLike, metadata: Metadata) -> None:
        super().__init__(checkpoint)
        self._metadata = metadata

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        if kwargs.get("rank") is not None:
            # Per-rank metadata is what DCP falls back to without a global file; ours always
            # has one, so this is never the file to read.
            raise FileNotFoundError("per-rank DCP metadata is not read")
        if getattr(self._metadata, "storage_meta", None) is None:
            self._metadata.storage_meta = StorageMeta()
        self._metadata.storage_meta.load_id = self.load_id  # as FileSystemReader does
        return self._metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """``DefaultLoadPlanner`` whose non-tensor entries (optimizer hyperparameters and the like)
    are read with ``torch.load(weights_only=True)``: plain values and tensors only."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError:
            raise UnsafeCheckpointError(f"entry {read_item.dest_index.fqn}: refused, it needs "
                                        "Python objects beyond plain values and tensors to load "
                                        "(a pickle that could run code)") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj
