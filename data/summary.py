"""A short description of a dataset: size, label rates, time span, media coverage, cold start."""

from __future__ import annotations

from typing import Any

import polars as pl

from data.bags import is_bag
from data.coldstart import add_cold_flags
from data.dataset import Dataset
from data.prepare import Prepared
from data.retention import SECONDS_PER_DAY
from data.split import time_split


def _cold_frame(dataset: Dataset, prepared: Prepared | None) -> pl.DataFrame:
    """``split`` and ``cold_item`` under the default time split, reusing ``prepared`` when it
    used exactly that split."""
    if (prepared is not None and prepared.config.split == "time"
            and prepared.config.fractions == (0.8, 0.1, 0.1)):
        return prepared.frame.select("split", "item_id", "cold_item")
    inter = dataset.interactions.select("row_id", "user_id", "item_id", "ts")
    return add_cold_flags(time_split(inter)).select("split", "item_id", "cold_item")


def summarize(dataset: Dataset, prepared: Prepared | None = None) -> dict[str, Any]:
    """Numbers that tell whether a dataset looks as expected before training on it.

    Keys: ``name``, ``rows``, ``users``, ``items``, ``label_rates`` (label → positive share),
    ``days`` (time span, days), ``image_share`` / ``text_share`` (share of items with an image /
    a text), ``items_without_image``, ``missing_media`` (images named but unreadable),
    ``cold_test_rows`` / ``cold_test_items`` (share of test rows / distinct test items whose
    item never occurs in train, under the default 80/10/10 time split), ``bags`` (multi-valued
    feature → ``mean_values`` per row of its table, ``empty_share``, ``distinct`` values).
    """
    inter, items = dataset.interactions, dataset.items
    stats = inter.select(
        pl.len().alias("rows"),
        pl.col("user_id").n_unique().alias("users"),
        ((pl.col("ts").max() - pl.col("ts").min()) / SECONDS_PER_DAY).alias("days"),
        *[pl.col(label).cast(pl.Float64).mean().alias(label) for label in dataset.labels],
    ).row(0, named=True)
    media = items.select(
        pl.col("image").is_not_null().mean().alias("image_share"),
        pl.col("text").is_not_null().mean().alias("text_share"),
        pl.col("image").is_null().sum().alias("items_without_image"),
    ).row(0, named=True)
    # Poster coverage as a user feels it: the share of interactions whose item has an image.
    rows_with_image = inter.join(items.select("item_row", "image"), on="item_row", how="left") \
        .select(pl.col("image").is_not_null().mean()).item()
    test = _cold_frame(dataset, prepared).filter(pl.col("split") == "test")
    cold = test.select(
        pl.col("cold_item").mean().alias("rows"),
        pl.col("item_id").filter(pl.col("cold_item")).n_unique().alias("cold"),
        pl.col("item_id").n_unique().alias("all"),
    ).row(0, named=True)
    return {
        "name": dataset.spec.name,
        "rows": stats["rows"],
        "users": stats["users"],
        "items": items.height,
        "label_rates": {label: stats[label] for label in dataset.labels},
        "days": stats["days"],
        "image_share": media["image_share"],
        "rows_with_image_share": rows_with_image,
        "text_share": media["text_share"],
        "items_without_image": media["items_without_image"],
        "missing_media": len(dataset.missing_media),
        "cold_test_rows": cold["rows"] or 0.0,
        "cold_test_items": cold["cold"] / cold["all"] if cold["all"] else 0.0,
        "bags": _bag_stats(dataset),
    }


def _bag_stats(dataset: Dataset) -> dict[str, dict[str, float]]:
    """Per multi-valued feature, over the rows of the table it lives in."""
    tables = [dataset.items, dataset.interactions, *([dataset.users] if dataset.users is not None else [])]
    stats = {}
    for table in tables:
        for name, dtype in table.schema.items():
            if is_bag(dtype):
                lengths = table[name].list.len()
                stats[name] = {"mean_values": float(lengths.mean()),
                               "empty_share": float((lengths == 0).mean()),
                               "distinct": table[name].explode().drop_nulls().n_unique()}
    return stats


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as an aligned text block, one quantity per line."""
    lines: list[tuple[str, str]] = [
        ("dataset", str(summary["name"])),
        ("rows", f"{summary['rows']:,}"),
        ("users", f"{summary['users']:,}"),
        ("items", f"{summary['items']:,}"),
        *[(f"positive rate {label}", f"{rate:.2%}")
          for label, rate in summary["label_rates"].items()],
        ("time span (days)", f"{summary['days']:.1f}"),
        ("items with image", f"{summary['image_share']:.1%}"),
        ("rows with item image", f"{summary['rows_with_image_share']:.1%}"),
        ("items with text", f"{summary['text_share']:.1%}"),
        ("items without image", f"{summary['items_without_image']:,}"),
        ("unreadable media", f"{summary['missing_media']:,}"),
        ("cold items, test rows", f"{summary['cold_test_rows']:.1%}"),
        ("cold items, test items", f"{summary['cold_test_items']:.1%}"),
        *[(f"bag {name}", f"{b['mean_values']:.2f} values per row, {b['empty_share']:.1%} empty, "
           f"{b['distinct']:,} distinct") for name, b in summary.get("bags", {}).items()],
    ]
    width = max(len(key) for key, _ in lines)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in lines)
