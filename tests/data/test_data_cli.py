"""`recsys data synth` and `recsys data prepare` through the CLI: they write what the library
writes, and refuse a non-empty output directory (one line, exit 2, nothing touched)."""

from __future__ import annotations

from pathlib import Path

from data.adapters.movielens import prepare_movielens
from data.dataset import load_dataset
from data.synth import SynthConfig, synthesize
from recsys.cli import main
from tests.data.test_movielens import write_source

SMALL = ["--users", "40", "--items", "30", "--days", "12", "--seed", "3", "--image-size", "8"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_data_synth_writes_the_libraries_world_and_refuses_a_non_empty_out(tmp_path, capsys):
    out = tmp_path / "world"
    assert main(["data", "synth", "--out", str(out), *SMALL]) == 0
    assert f"wrote the synthetic world to {out}" in capsys.readouterr().out
    same = synthesize(tmp_path / "library", SynthConfig(n_users=40, n_items=30, n_days=12, seed=3,
                                                         image_size=8))
    assert _files(out) == _files(same)  # the flags map onto SynthConfig's fields
    assert load_dataset(out).interactions.height > 0

    before = _files(out)
    assert main(["data", "synth", "--out", str(out), *SMALL[:-2], "--seed", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err and "Traceback" not in err
    assert _files(out) == before
    assert main(["data", "synth", "--out", str(out), *SMALL[:-4], "--seed", "4", "--overwrite",
                 "--image-size", "8"]) == 0
    assert _files(out) != before


def test_data_prepare_movielens_writes_the_adapters_dataset_and_refuses_a_non_empty_out(
        tmp_path, capsys):
    src = write_source(tmp_path / "ml")
    out = tmp_path / "out"
    assert main(["data", "prepare", "movielens", "--src", str(src), "--out", str(out),
                 "--like-threshold", "3.5"]) == 0
    assert f"check it with: recsys data check {out}" in capsys.readouterr().out
    same = prepare_movielens(src, tmp_path / "library", like_threshold=3.5, log=None)
    tables = {k: v for k, v in _files(out).items() if k != "prepare_report.json"}  # paths, time
    assert tables == {k: v for k, v in _files(same).items() if k != "prepare_report.json"}
    assert {"dataset.toml", "interactions.parquet", "items.parquet"} <= set(tables)
    assert main(["data", "check", str(out)]) == 0

    before = _files(out)
    assert main(["data", "prepare", "movielens", "--src", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "output directory is not empty" in err
    assert "Traceback" not in err and _files(out) == before
    # A non-empty directory that is not a dataset is never overwritten, even when asked to.
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("keep me")
    assert main(["data", "prepare", "movielens", "--src", str(src), "--out", str(stray),
                 "--overwrite"]) == 2
    assert "does not look like a dataset" in capsys.readouterr().err
    assert _files(stray) == {"notes.txt": b"keep me"}
