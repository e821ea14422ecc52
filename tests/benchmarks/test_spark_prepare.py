"""The Spark preparation job (benchmarks/spark_prepare*.py): the shard comparison catches what
it must, the job's settings are the presets', and, where ``.venv-spark`` and Java exist, the
job's shards equal the polars ones.

The comparison is checked on two polars-written shard directories, one of them altered (a
value one float ulp off, a dtype, the row order, a null, a missing file, the manifest), so it
runs everywhere; the Spark run needs pyspark and Java and is skipped without them
(``python benchmarks/spark_env.py`` makes them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from benchmarks.spark_env import JAVA_HINT, spark_ready
from benchmarks.spark_prepare import (
    compare_shards,
    prepare_settings,
    run_spark_job,
    spark_command,
    spark_env_vars,
)
from benchmarks.spark_prepare_job import parse_args
from benchmarks.spark_prepare_job import prepare_settings as job_settings
from data.dataset import load_dataset
from data.prepare import PrepareConfig, prepare
from data.shards import write_shards
from tests.data.contract_fixtures import write_dataset
from tests.data.test_bags import BAG_SPEC, bag_tables

BUCKETS = 4


def string_id_bag_tables() -> dict[str, pl.DataFrame]:
    """The bag fixture (bags in items, users and context; a user bag of integers) with string
    user and item ids: the cases the synthetic world does not have."""
    t = bag_tables()
    as_text = {"uid": pl.format("u{}", "uid"), "iid": pl.format("i{}", "iid")}
    return {name: df.with_columns(expr.alias(c) for c, expr in as_text.items() if c in df.columns)
            for name, df in t.items()}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("spark_prepare")
    data = write_dataset(base / "dataset", string_id_bag_tables(), BAG_SPEC)
    # Interactions as CSV (the job numbers its rows itself), items and users as Parquet.
    inter = pl.read_parquet(data / "interactions.parquet").with_columns(pl.col("topics").fill_null(""))
    inter.write_csv(data / "interactions.csv")
    (data / "interactions.parquet").unlink()
    spec = (data / "dataset.toml").read_text().replace("interactions.parquet", "interactions.csv")
    (data / "dataset.toml").write_text(spec)
    write_shards(prepare(load_dataset(data), prepare_settings()), base / "polars", BUCKETS)
    # The alterations below change the train file with the most rows.
    largest = max(range(BUCKETS), key=lambda b: pl.read_parquet(base / "polars" / f"train/part-{b:05d}.parquet").height)
    return {"data": data, "polars": base / "polars", "base": base, "file": f"train/part-{largest:05d}.parquet"}


@pytest.fixture
def altered(shards, tmp_path) -> Path:
    copy = tmp_path / "altered"
    shutil.copytree(shards["polars"], copy)
    return copy


def rewrite(directory: Path, name: str, change) -> None:
    path = directory / name
    change(pl.read_parquet(path)).write_parquet(path)


def test_identical_directories_have_no_difference(shards, altered):
    assert pl.read_parquet(altered / shards["file"]).height >= 3  # rows to alter
    assert compare_shards(shards["polars"], altered) == []


def test_a_value_one_ulp_off_is_found(shards, altered):
    def nudge(df: pl.DataFrame) -> pl.DataFrame:
        logit = df["prior_logit"].to_numpy().copy()
        logit[2] = np.nextafter(logit[2], np.float32(np.inf), dtype=np.float32)
        return df.with_columns(pl.Series("prior_logit", logit, dtype=pl.Float32))

    name = shards["file"]
    rewrite(altered, name, nudge)
    problems = compare_shards(shards["polars"], altered)
    assert len(problems) == 1
    assert problems[0].startswith(f"{name}: column prior_logit differs in 1 rows, first row 2")


def test_a_changed_dtype_is_found(shards, altered):
    name = shards["file"]
    rewrite(altered, name, lambda df: df.with_columns(pl.col("lt7").cast(pl.Int64)))
    assert compare_shards(shards["polars"], altered) == [f"{name}: column lt7 is Int64 instead of Int32"]


def test_a_changed_row_order_is_found(shards, altered):
    name = shards["file"]
    rewrite(altered, name, lambda df: df.reverse())
    problems = compare_shards(shards["polars"], altered)
    assert any(p.startswith(f"{name}: column row_id differs") for p in problems)


def test_a_null_for_a_value_and_a_bag_element_are_found(shards, altered):
    def null_first(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(
            pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("idx_item")).alias("idx_item"),
            pl.when(pl.int_range(pl.len()) == 1).then(pl.col("hist_rows").list.concat([0]))
            .otherwise(pl.col("hist_rows")).alias("hist_rows"))

    name = shards["file"]
    rewrite(altered, name, null_first)
    problems = compare_shards(shards["polars"], altered)
    assert [p.split(" differs")[0] for p in problems] == [f"{name}: column idx_item", f"{name}: column hist_rows"]


def test_a_missing_file_and_a_changed_manifest_are_found(shards, altered):
    (altered / "valid" / "part-00003.parquet").unlink()
    assert "valid/part-00003.parquet" in compare_shards(shards["polars"], altered)[0]
    shutil.copyfile(shards["polars"] / "valid" / "part-00003.parquet", altered / "valid" / "part-00003.parquet")
    manifest = json.loads((altered / "manifest.json").read_text())
    manifest["written_by"] = "spark"  # which engine wrote them is no difference
    assert compare_shards(shards["polars"], altered) == []
    manifest["vocabs"]["user"]["values"].reverse()
    (altered / "manifest.json").write_text(json.dumps(manifest))
    assert compare_shards(shards["polars"], altered) == ["manifest.json: vocabs differs"]


def test_the_jobs_default_settings_are_the_presets():
    args = parse_args(["--data", "d", "--out", "o"])
    assert job_settings(args) == prepare_settings().to_dict()
    assert args.buckets == 16
    changed = parse_args(["--data", "d", "--out", "o", "--split", "user_time", "--fractions",
                          "0.7,0.2,0.1", "--tail-days", "0", "--no-item-prior-rate", "--max-history", "5"])
    assert job_settings(changed) | {"fractions": None} == {
        "max_history": 5, "split": "user_time", "fractions": None, "retention": True, "min_count": 1,
        "tail_days": 0, "prior_rate": True, "item_prior_rate": False}
    assert job_settings(changed)["fractions"] == [0.7, 0.2, 0.1]


@pytest.mark.parametrize("argv, message", [
    (["--fractions", "0.5,0.5,0.5"], "--fractions must be three non-negative numbers summing to 1"),
    (["--fractions", "a,b"], "--fractions: not three numbers"),
    (["--buckets", "0"], "--buckets must be >= 1, got 0"),
    (["--tail-days", "-1"], "--tail-days must be >= 0, got -1"),
    (["--split", "random"], "argument --split: invalid choice: 'random'"),
])
def test_bad_job_arguments_exit_2_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--data", "d", "--out", "o", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not spark_ready(), reason=f".venv-spark or Java missing: run "
                    f"`python benchmarks/spark_env.py` ({JAVA_HINT})")
def test_the_spark_job_writes_the_polars_shards(shards):
    """String ids, CSV interactions, bags of three kinds (a separator, a List column, integer
    elements), empty buckets, tail days and censored retention: every file and the manifest
    equal."""
    out = shards["base"] / "spark"
    run_spark_job(shards["data"], out, BUCKETS, threads=2, log=shards["base"] / "spark.log")
    assert json.loads((out / "manifest.json").read_text())["written_by"] == "spark"
    assert compare_shards(shards["polars"], out) == []


# The other split methods and the settings the presets leave at their defaults.
VARIANTS = {
    "user_time": (("--split", "user_time", "--fractions", "0.7,0.2,0.1", "--min-count", "2",
                   "--tail-days", "0", "--no-item-prior-rate"),
                  PrepareConfig(max_history=20, split="user_time", fractions=(0.7, 0.2, 0.1),
                                min_count=2, tail_days=0, item_prior_rate=False)),
    "leave_last_out": (("--split", "leave_last_out", "--max-history", "3", "--tail-days", "5",
                        "--no-retention", "--no-prior-rate"),
                       PrepareConfig(max_history=3, split="leave_last_out", tail_days=5,
                                     retention=False, prior_rate=False, item_prior_rate=True)),
}


@pytest.mark.slow
@pytest.mark.skipif(not spark_ready(), reason=f".venv-spark or Java missing: run "
                    f"`python benchmarks/spark_env.py` ({JAVA_HINT})")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_spark_job_follows_every_setting(shards, tmp_path, variant):
    arguments, config = VARIANTS[variant]
    assert job_settings(parse_args(["--data", "d", "--out", "o", *arguments])) == config.to_dict()
    write_shards(prepare(load_dataset(shards["data"]), config), tmp_path / "polars", BUCKETS)
    run_spark_job(shards["data"], tmp_path / "spark", BUCKETS, threads=2, log=tmp_path / "spark.log",
                  settings=arguments)
    assert compare_shards(tmp_path / "polars", tmp_path / "spark") == []


@pytest.mark.slow
@pytest.mark.skipif(not spark_ready(), reason=f".venv-spark or Java missing: run "
                    f"`python benchmarks/spark_env.py` ({JAVA_HINT})")
def test_the_spark_job_refuses_text_timestamps_in_one_line(shards, tmp_path):
    """ISO-8601 timestamps are valid contract data the job does not parse: exit 2, one line
    naming the file and column, and no output directory."""
    data = shutil.copytree(shards["data"], tmp_path / "iso")
    inter = pl.read_csv(data / "interactions.csv")
    inter.with_columns(pl.from_epoch("ts").dt.strftime("%Y-%m-%dT%H:%M:%S")).write_parquet(
        data / "interactions.parquet")
    (data / "interactions.csv").unlink()  # the spec's interactions.csv is found as .parquet
    out = tmp_path / "out"
    done = subprocess.run(spark_command(data, out, BUCKETS, threads=1), capture_output=True,
                          text=True, env=spark_env_vars())
    assert done.returncode == 2
    # spark-submit hands the driver's stderr on through its stdout.
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error:")]
    assert errors == [f"error: {data / 'interactions.parquet'}, column ts: timestamps of type "
                      "string are not supported by the Spark job (use integer seconds or a "
                      "timestamp column)"]
    assert not out.exists()
