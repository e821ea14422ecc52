"""Subcommands of the ``recsys`` CLI.

Each module exposes ``register(subparsers)`` which adds its parser and sets ``func`` to a
function ``(args) -> int`` (the exit status). Add a new command by appending it here.
"""

from __future__ import annotations

from recsys.commands import (
    data_cmd,
    demo_cmd,
    embeddings_cmd,
    features,
    predict_cmd,
    select_cmd,
    track_cmd,
    train_cmd,
)

COMMANDS = [demo_cmd.register, data_cmd.register, features.register, train_cmd.register,
            select_cmd.register, track_cmd.register, predict_cmd.register,
            embeddings_cmd.register]
