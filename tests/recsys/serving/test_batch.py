"""``recsys predict``: batch scoring of a Parquet or CSV file of requests (issue 26, item 3)."""

from __future__ import annotations

import polars as pl

from recsys.cli import main
from recsys.serving.replay import replay_requests
from tests.recsys.serving.conftest import MODEL, Registry


def _as_csv(requests: pl.DataFrame) -> pl.DataFrame:
    """The CSV form of requests: history as ids separated by spaces, counts as two columns."""
    return requests.with_columns(
        pl.col("history").list.eval(pl.element().cast(pl.String)).list.join(" "),
        *[pl.col(p).struct.field(f).alias(f"{p}.{f}")
          for p in ("user_prior", "item_prior") for f in ("rows", "positives")],
    ).drop("user_prior", "item_prior")


def test_recsys_predict_scores_parquet_and_csv_files(registry: Registry, world, tmp_path, capsys):
    run = registry.runs["em3"]
    requests = replay_requests(run, world, "test")
    requests.write_parquet(tmp_path / "requests.parquet")
    _as_csv(requests).write_csv(tmp_path / "requests.csv")

    # A run directory, Parquet in, Parquet out, in chunks smaller than the file, with the bar.
    out = tmp_path / "scores.parquet"
    assert main(["predict", "--model", str(run), "--input", str(tmp_path / "requests.parquet"),
                 "--out", str(out), "--chunk-rows", "500", "--keep", "row_id"]) == 0
    assert "predict" in capsys.readouterr().err  # the progress bar
    scores = pl.read_parquet(out)
    heads = ["pred_click", "pred_like", "pred_return_7d", "pred_return_14d"]
    assert scores.columns == ["user_id", "item_id", "row_id", *heads]
    # The run's test predictions (its best weights, as recsys evaluate scores them).
    expected = pl.read_parquet(run / "predictions" / "test.parquet")
    both = expected.join(scores, on="row_id", suffix="_batch")
    assert both.height == requests.height
    for head in heads:
        assert (both[head] - both[f"{head}_batch"]).abs().max() <= 1e-5, head

    # The registered version, CSV in and out: the same scores.
    out_csv = tmp_path / "scores.csv"
    assert main(["predict", "--model", f"models:/{MODEL}/{registry.versions['em3']}",
                 "--tracking-uri", registry.uri, "--input", str(tmp_path / "requests.csv"),
                 "--out", str(out_csv), "--quiet"]) == 0
    from_csv = pl.read_csv(out_csv)
    for head in heads:
        assert (from_csv[head] - scores[head]).abs().max() <= 1e-6, head


def test_a_bad_row_stops_recsys_predict_before_any_output(registry: Registry, world, tmp_path,
                                                          capsys):
    run = registry.runs["em3"]
    requests = replay_requests(run, world, "test").with_row_index("n")
    # Row 1300 of the file sits in the third chunk of 500.
    bad = requests.with_columns(pl.when(pl.col("n") == 1299).then(None).otherwise(pl.col("item_id"))
                                .alias("item_id")).drop("n")
    bad.write_parquet(tmp_path / "requests.parquet")
    out = tmp_path / "scores.parquet"
    assert main(["predict", "--model", str(run), "--input", str(tmp_path / "requests.parquet"),
                 "--out", str(out), "--chunk-rows", "500", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'requests.parquet'}, column 'item_id', row 1300: null id"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["requests.parquet"]  # nothing written
