"""The whole-log facts that ``prepare`` reads off its one frame, computed by streaming scans of
the partitioned interactions instead (``data.prepare_bounded``).

- ``LogFacts``: the log's last day (retention censoring, the tail), its first day, the sorted
  distinct users (``user_key`` is the position there) and the time split's cut keys;
- ``time_key_at``: the ``(ts, row_id)`` at one position of the log's time order, found by
  counting rows per range of timestamps (a radix select): each scan keeps one count per range,
  never the log.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from data.prepare import PrepareConfig, tail_mask
from data.retention import SECONDS_PER_DAY
from data.split import TimeKey, split_cuts

# Ranges counted per scan of the radix select: 2^20 counts are a few MB, and timestamps in
# seconds over decades are found in two scans.
RADIX_BINS = 1 << 20


def day_of_row() -> pl.Expr:
    """``floor(ts / 86400)``, as data.retention counts days."""
    return pl.col("ts") // SECONDS_PER_DAY


@dataclass(frozen=True)
class LogFacts:
    """What every partition needs to know about the whole log.

    Attributes:
        first_day, last_day: ``floor(ts / 86400)`` of the earliest and latest row.
        users: the distinct user ids, sorted (``user_key`` = position).
        head_rows: rows before the tail (all rows with ``tail_days = 0``).
        time_cuts: the ``time_cut_keys`` of the rows before the tail (``split = "time"`` only).
    """

    first_day: int
    last_day: int
    users: pl.Series
    head_rows: int
    time_cuts: tuple[TimeKey | None, TimeKey | None] | None

    def in_tail(self, tail_days: int) -> pl.Expr:
        """True for the rows of the log's last ``tail_days`` days (none with 0)."""
        return tail_mask(self.last_day, tail_days)

    def user_keys(self) -> pl.DataFrame:
        """``user_id`` → ``user_key`` (Int64, the dense rank of the id over the whole log)."""
        return pl.DataFrame([self.users, pl.int_range(len(self.users), dtype=pl.Int64, eager=True)
                             .alias("user_key")])


def log_facts(rows: pl.LazyFrame, config: PrepareConfig) -> LogFacts:
    """Scans the canonical interactions ``rows`` (``user_id``, ``ts``, ``row_id``) for the facts."""
    days = rows.select(day_of_row().min().alias("first"), day_of_row().max().alias("last")
                       ).collect(engine="streaming")
    first_day, last_day = days.row(0)
    users = (rows.select("user_id").unique().collect(engine="streaming")["user_id"]
             .sort().rename("user_id"))
    head = rows.filter(~tail_mask(last_day, config.tail_days))
    head_rows = head.select(pl.len()).collect(engine="streaming").item()
    time_cuts = None
    if config.split == "time" and head_rows:
        time_cuts = tuple(time_key_at(head, p) if p < head_rows else None
                          for p in split_cuts(head_rows, config.fractions))
    return LogFacts(first_day=first_day, last_day=last_day, users=users, head_rows=head_rows,
                    time_cuts=time_cuts)  # type: ignore[arg-type]


def time_key_at(rows: pl.LazyFrame, position: int) -> TimeKey:
    """The ``(ts, row_id)`` of the row at 0-based ``position`` of ``rows`` sorted by
    ``(ts, row_id)``, without sorting: scans count the rows per range of timestamps and narrow
    the range that holds the position until it is one timestamp; the row ids of that timestamp
    are then sorted (so memory holds at most the rows that share one timestamp).
    """
    lo, hi = rows.select(pl.col("ts").min().alias("lo"), pl.col("ts").max().alias("hi")
                         ).collect(engine="streaming").row(0)
    before = 0  # rows with ts < lo
    while lo < hi:
        width = -(-(hi - lo + 1) // RADIX_BINS)  # ceil: at most RADIX_BINS ranges
        # Int128 so that ranges of a timestamp column spanning most of Int64 do not overflow.
        offset = pl.col("ts").cast(pl.Int128) - lo
        counts = (rows.filter(pl.col("ts").is_between(lo, hi))
                  .group_by((offset // width).cast(pl.Int64).alias("bin")).agg(pl.len().alias("n"))
                  .collect(engine="streaming").sort("bin")
                  .with_columns(pl.col("n").cast(pl.Int64).cum_sum().alias("upto")))
        hit = counts.filter(pl.col("upto") > position - before).row(0, named=True)
        before += hit["upto"] - hit["n"]
        lo, hi = lo + hit["bin"] * width, min(hi, lo + (hit["bin"] + 1) * width - 1)
    ids = rows.filter(pl.col("ts") == lo).select("row_id").collect(engine="streaming")["row_id"].sort()
    return lo, ids[position - before]
