"""``recsys features``: builds the default cache, reports it, and refuses bad input cleanly."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from data.errors import DataError
from multimodal.token_cache import TokenCache, default_cache_dir
from recsys.commands import features
from recsys.errors import UsageError


def cli(argv: list[str]) -> int:
    # The subcommand on its own parser, exactly as recsys.cli registers every command.
    parser = argparse.ArgumentParser(prog="recsys")
    features.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_features_builds_the_default_cache_and_reports_it(dataset_dir: Path, capsys):
    assert cli(["features", str(dataset_dir), "--tokens", "6", "--batch-size", "4",
                "--no-progress"]) == 0
    out = capsys.readouterr().out
    expected = default_cache_dir(dataset_dir, "tiny", "tiny", 6)
    assert f"token cache: {expected}" in out
    assert "vision: tiny (tiny), 5 tokens x 32, 1 of 7 items without it" in out
    assert "text: tiny (tiny), 6 tokens x 32, 1 of 7 items without it" in out
    assert TokenCache.open(expected).num_items == 7
    # --out and 'all' tokens: every vision token kept (16 patches + CLS).
    assert cli(["features", str(dataset_dir), "--tokens", "all", "--out",
                str(dataset_dir / "mine"), "--no-progress"]) == 0
    assert TokenCache.open(dataset_dir / "mine").vision.shape[1] == 17


def test_features_progress_bar_goes_to_stderr(dataset_dir: Path, capsys):
    assert cli(["features", str(dataset_dir), "--tokens", "4", "--batch-size", "7"]) == 0
    assert "encoding items" in capsys.readouterr().err


def test_features_refuses_bad_input_with_one_line_errors(dataset_dir: Path, tmp_path: Path):
    with pytest.raises(DataError):
        cli(["features", str(tmp_path / "missing")])
    with pytest.raises(UsageError, match="vector file not found"):
        cli(["features", str(dataset_dir), "--vision", str(tmp_path / "nope.npy")])
    with pytest.raises(UsageError, match="--batch-size"):
        cli(["features", str(dataset_dir), "--batch-size", "0"])
    with pytest.raises(SystemExit) as exit_info:
        cli(["features", str(dataset_dir), "--tokens", "0"])
    assert exit_info.value.code == 2
    (dataset_dir / "img" / "0.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="--allow-missing-media"):
        cli(["features", str(dataset_dir), "--no-progress"])


def test_features_help_explains_the_options(capsys):
    with pytest.raises(SystemExit):
        cli(["features", "--help"])
    text = capsys.readouterr().out
    for phrase in ("--vision", "--text", "--tokens", "--allow-missing-media", "--force", "resumes",
                   "precomputed vectors", "save_pretrained", ".cache/tokens-"):
        assert phrase in text, phrase
