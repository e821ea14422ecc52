"""The ``recsys`` command line: one subcommand module per job under ``recsys/commands``.

Every bad-input error (``DataError``, ``UsageError``, and ``CheckpointLoadError`` for a
checkpoint that does not fit or is refused) is printed as one line per problem on stderr with
exit status 2 and no traceback; other exceptions are real bugs and keep theirs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from data.errors import DataError, one_line
from ranking.checkpoint_errors import CheckpointLoadError
from recsys.commands import COMMANDS
from recsys.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys",
        description=(
            "Train CTR/ranking models end to end with their multimodal content model (EM3), "
            "evaluate them offline and select the candidate for an online A/B test."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


def quiet_library_noise() -> None:
    """Silences warnings that say nothing actionable to a user of this toolkit.

    - fbgemm's dense (data-parallel) embedding lookup has its backward in C++ without an
      Autograd-key registration, so torch warns on every backward; the tables do train
      (tests/ranking checks that a step changes them).
    - torch.fx's is_fx_tracing notice, the planner's per-table chatter, and FutureWarnings
      raised inside torchrec / torch.distributed.
    """
    warnings.filterwarnings("ignore", message=".*dense_embedding_codegen_lookup_function.*")
    warnings.filterwarnings("ignore", message=".*is_fx_tracing.*")
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
    # Deprecation notices inside torchrec / torch.distributed (ShardedTensor, DDP arguments):
    # ours to track when upgrading the locked stack, not the user's to act on.
    for module in ("torchrec", "torch.distributed"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
    for name in ("torch.fx._symbolic_trace", "torchrec", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # MLflow's store migrations log at INFO and its SQLAlchemy layer warns about itself.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow.store")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_library_noise()
    try:
        return int(args.func(args) or 0)
    except (DataError, UsageError, CheckpointLoadError) as err:
        problems = getattr(err, "problems", None) or [str(err)]
        for p in problems:
            print(f"error: {one_line(str(p))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
