"""The synthetic multimodal world: the toolkit's embedded default dataset.

``synthesize(out_dir, SynthConfig())`` writes a contract-valid dataset (docs/design.md §4): item
images and titles rendered from each item's latent topic and style, a hidden item quality that
no content shows, an impression log with ``click`` and ``like`` labels, cold items released
late, and users whose return depends on how satisfying their sessions were. The generative
story and every knob are documented in docs/synthetic_world.md; same config ⇒ same bytes.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from data.errors import DataError, Problem
from data.spec import DatasetSpec, InteractionsSpec, ItemsSpec, UsersSpec, spec_to_toml
from data.synth_media import item_text, write_images

DAY = 86_400
SESSION_WINDOW = 3 * 3600  # a session's impressions all fall within three hours of its start
DEVICES = ("mobile", "desktop", "tablet")
DEVICE_SHARE = (0.6, 0.3, 0.1)
DEVICE_EFFECT = np.array([0.0, -0.2, 0.1])  # click logit offset per device
AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_EFFECT = np.array([0.3, 0.15, 0.0, -0.15, -0.3])  # click logit offset per age group
REGIONS = ("north", "south", "east", "west", "central")


def _knob(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the synthetic world (docs/synthetic_world.md explains each)."""

    n_users: int = _knob(1600, "number of users")
    n_items: int = _knob(1500, "number of items")
    n_days: int = _knob(75, "days covered by the log")
    n_topics: int = _knob(12, "latent item topics")
    seed: int = _knob(0, "seed of every random draw")
    start_epoch: int = _knob(1_704_067_200, "timestamp of day 0, 00:00 UTC (2024-01-01)")
    cold_item_share: float = _knob(0.25, "share of items released late (cold start)")
    cold_release_share: float = _knob(0.3, "cold items are released in this last share of days")
    n_brands: int = _knob(40, "item brands (categorical)")
    brand_quality_share: float = _knob(0.25, "share of quality variance explained by brand")
    missing_image_share: float = _knob(0.05, "share of items without an image")
    missing_description_share: float = _knob(0.1, "share of items without a description")
    title_topic_prob: float = _knob(0.6, "chance that a title word comes from the topic vocabulary")
    description_topic_prob: float = _knob(0.4, "same for description words")
    genre_noise: float = _knob(0.15, "chance that the genre names a random topic")
    image_size: int = _knob(32, "image side in pixels")
    image_noise: float = _knob(0.08, "pixel noise sd (0..1 scale); also jitters hue")
    topic_concentration: float = _knob(0.3, "Dirichlet concentration per topic of user preferences")
    join_window_share: float = _knob(0.5, "users join uniformly within this first share of days")
    activity_mean: float = _knob(0.15, "daily return probability at the reference satisfaction")
    activity_sd: float = _knob(0.8, "sd of user activity on the logit scale")
    session_mean: float = _knob(12.0, "mean impressions per session")
    session_max: int = _knob(30, "most impressions in one session (<= 100)")
    explore_share: float = _knob(0.4, "share of impressions the logging policy picks uniformly")
    click_base: float = _knob(-3.0, "click logit intercept")
    topic_weight: float = _knob(1.0, "click logit per unit of topic affinity")
    style_weight: float = _knob(0.5, "click logit per unit of style match")
    quality_weight: float = _knob(0.8, "click logit per unit of hidden item quality")
    user_bias_sd: float = _knob(0.5, "sd of the per-user click logit offset")
    click_noise: float = _knob(0.5, "sd of per-impression click logit noise")
    like_base: float = _knob(-1.2, "like-given-click logit intercept")
    like_topic_weight: float = _knob(0.6, "like logit per unit of topic affinity")
    like_quality_weight: float = _knob(1.0, "like logit per unit of hidden item quality")
    retention_weight: float = _knob(3.0, "return logit per unit of session satisfaction")
    like_satisfaction_weight: float = _knob(2.0, "a like counts this many clicks in satisfaction")
    satisfaction_ref: float = _knob(0.25, "satisfaction at which returning happens at activity_mean")

    def __post_init__(self) -> None:
        checks = [(name, getattr(self, name) >= (8 if name == "image_size" else 1), "too small")
                  for name in ("n_users", "n_items", "n_days", "n_topics", "n_brands", "image_size")]
        checks += [(f.name, 0 <= getattr(self, f.name) <= 1, "must be in [0, 1]")
                   for f in fields(self) if f.name.endswith(("_share", "_prob", "_noise"))]
        checks += [
            ("activity_mean", 0 < self.activity_mean < 1, "must be in (0, 1)"),
            ("session_max", 1 <= self.session_mean <= self.session_max <= 100,
             "need 1 <= session_mean <= session_max <= 100"),
            ("topic_concentration", self.topic_concentration > 0, "must be > 0"),
        ]
        bad = [Problem("synth config", f"{msg}, got {getattr(self, name)}", column=name)
               for name, ok, msg in checks if not ok]
        if bad:
            raise DataError(bad)

    @property
    def cold_start_day(self) -> int:
        """First day on which cold items may be released."""
        return self.n_days - max(1, math.ceil(self.cold_release_share * self.n_days))


@dataclass
class World:
    """The simulated world: the tables as written plus the latent truth (never written).

    Array index ``i`` is item id ``i + 1``; index ``u`` is user id ``u + 1``. ``truth`` has one
    row per interaction row, in the same order: ``affinity``, ``p_click``, ``p_like``.
    """

    config: SynthConfig
    interactions: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    truth: pl.DataFrame
    item_topic: np.ndarray     # n_items, int
    item_style: np.ndarray     # n_items x 2, in [-1, 1]
    item_quality: np.ndarray   # n_items, hidden from media and text
    item_release_day: np.ndarray
    user_pref: np.ndarray      # n_users x n_topics, rows sum to 1
    user_taste: np.ndarray     # n_users x 2, matched against item style


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _make_items(cfg: SynthConfig, rng: np.random.Generator, text_rng: np.random.Generator) -> dict:
    n, k = cfg.n_items, cfg.n_topics
    topic = rng.integers(0, k, n)
    style = rng.uniform(-1.0, 1.0, (n, 2))
    brand = rng.integers(0, cfg.n_brands, n)
    # Brand explains part of quality, so the brand categorical helps cold items a little, but most
    # quality is per item and only the item's ID embedding can learn it.
    share = cfg.brand_quality_share
    quality = (math.sqrt(share) * rng.normal(0.0, 1.0, cfg.n_brands)[brand]
               + math.sqrt(1 - share) * rng.normal(0.0, 1.0, n))
    cold = np.zeros(n, dtype=bool)
    cold[rng.permutation(n)[: round(cfg.cold_item_share * n)]] = True
    release = np.where(cold, rng.integers(cfg.cold_start_day, cfg.n_days, n), 0)
    has_image = rng.random(n) >= cfg.missing_image_share
    has_description = rng.random(n) >= cfg.missing_description_share
    genre_topic = np.where(rng.random(n) < cfg.genre_noise, rng.integers(0, k, n), topic)
    year = rng.integers(2010, 2024, n)  # pure noise: a categorical that carries no signal

    ids = np.arange(1, n + 1)
    frame = pl.DataFrame({
        "item_id": ids,
        **item_text(topic, genre_topic, k, cfg.title_topic_prob, cfg.description_topic_prob,
                    text_rng),
        "image": [f"images/{i}.png" for i in ids],
        "brand": [f"brand{b:02d}" for b in brand],
        "year": year,
    }, schema_overrides={"item_id": pl.Int64, "year": pl.Int64})
    frame = frame.with_columns(
        pl.when(pl.Series(has_description)).then(pl.col("description")).alias("description"),
        pl.when(pl.Series(has_image)).then(pl.col("image")).alias("image"),
    )
    return {"frame": frame, "topic": topic, "style": style, "quality": quality, "release": release}


def _make_users(cfg: SynthConfig, rng: np.random.Generator) -> dict:
    n, k = cfg.n_users, cfg.n_topics
    region = rng.integers(0, len(REGIONS), n)
    age = rng.integers(0, len(AGE_GROUPS), n)
    # Each region favours some topics, so user categoricals say something about a new user.
    region_mix = rng.dirichlet(np.ones(k), size=len(REGIONS))
    alpha = cfg.topic_concentration * k * (0.5 / k + 0.5 * region_mix[region])
    raw = rng.gamma(alpha)  # Dirichlet with a per-user alpha, vectorised
    pref = (raw + 1e-12) / (raw + 1e-12).sum(axis=1, keepdims=True)
    activity = (math.log(cfg.activity_mean / (1 - cfg.activity_mean))
                + cfg.activity_sd * rng.normal(0.0, 1.0, n))
    frame = pl.DataFrame({"user_id": np.arange(1, n + 1), "age_group": np.array(AGE_GROUPS)[age],
                          "region": np.array(REGIONS)[region]}, schema_overrides={"user_id": pl.Int64})
    return {
        "frame": frame, "pref": pref, "taste": rng.normal(0.0, 1.0, (n, 2)), "activity": activity,
        "bias": AGE_EFFECT[age] + cfg.user_bias_sd * rng.normal(0.0, 1.0, n),
        "join": rng.integers(0, max(1, round(cfg.join_window_share * cfg.n_days)), n),
        "device": rng.choice(len(DEVICES), size=n, p=DEVICE_SHARE),
    }


def _simulate_log(cfg: SynthConfig, rng: np.random.Generator, items: dict, users: dict) -> dict:
    """Day by day: who comes back, what they are shown, what they click and like.

    Vectorised over the day's sessions; the only Python loop is over days, because a user's
    chance to return tomorrow depends on today's outcome.
    """
    k = cfg.n_topics
    topic, style, quality, release = items["topic"], items["style"], items["quality"], items["release"]
    pref_cum = np.cumsum(users["pref"], axis=1)
    affinity_table = np.clip(np.log(k * users["pref"]), -3.0, None)  # log-ratio to uniform
    by_topic = np.argsort(topic, kind="stable")
    satisfaction = np.full(cfg.n_users, cfg.satisfaction_ref)
    days: list[dict[str, np.ndarray]] = []
    for day in range(cfg.n_days):
        # Return hazard: a constant daily chance, raised or lowered by the last session's
        # satisfaction; a user's join day always has a session.
        p_return = _sigmoid(users["activity"]
                            + cfg.retention_weight * (satisfaction - cfg.satisfaction_ref))
        draw = rng.random(cfg.n_users)
        who = np.flatnonzero((users["join"] == day) | ((users["join"] < day) & (draw < p_return)))
        if who.size == 0:
            continue
        lengths = np.clip(1 + rng.poisson(cfg.session_mean - 1, who.size), 1, cfg.session_max)
        user = np.repeat(who, lengths)
        rows = user.size

        # Logging policy: explore uniformly over released items, or exploit the user's topics.
        shown = by_topic[release[by_topic] <= day]
        counts = np.bincount(topic[shown], minlength=k)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        want = np.minimum((pref_cum[user] < rng.random(rows)[:, None]).sum(axis=1), k - 1)
        explore = (rng.random(rows) < cfg.explore_share) | (counts[want] == 0)
        u = rng.random(rows)
        in_topic = starts[want] + np.minimum((u * counts[want]).astype(np.int64),
                                             np.maximum(counts[want] - 1, 0))
        anywhere = np.minimum((u * shown.size).astype(np.int64), shown.size - 1)
        item = shown[np.where(explore, anywhere, in_topic)]

        device_of_session = np.where(rng.random(who.size) < 0.85, users["device"][who],
                                     rng.integers(0, len(DEVICES), who.size))
        device = np.repeat(device_of_session, lengths)
        affinity = affinity_table[user, topic[item]]
        style_match = (users["taste"][user] * style[item]).sum(axis=1)
        logit = (cfg.click_base + cfg.topic_weight * affinity + cfg.style_weight * style_match
                 + cfg.quality_weight * quality[item] + users["bias"][user] + DEVICE_EFFECT[device])
        p_click = _sigmoid(logit + cfg.click_noise * rng.normal(0.0, 1.0, rows))
        click = rng.random(rows) < p_click
        p_like = _sigmoid(cfg.like_base + cfg.like_topic_weight * affinity
                          + cfg.like_quality_weight * quality[item])
        like = click & (rng.random(rows) < p_like)

        first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        score = click + cfg.like_satisfaction_weight * like
        satisfaction[who] = np.add.reduceat(score, first) / lengths

        start = rng.integers(0, DAY - SESSION_WINDOW, who.size)
        gaps = np.cumsum(rng.integers(5, 61, rows))
        within = gaps - np.repeat(gaps[first], lengths)  # seconds since the session's first row
        ts = cfg.start_epoch + day * DAY + np.repeat(start, lengths) + within
        days.append({"user": user, "item": item, "ts": ts, "device": device, "click": click,
                     "like": like, "affinity": affinity, "p_click": p_click, "p_like": p_like})
    return {name: np.concatenate([d[name] for d in days]) for name in days[0]}


def simulate(config: SynthConfig) -> World:
    """Runs the generative story in memory (no files, no images); see ``synthesize``."""
    # Independent streams per stage: changing a text knob does not change the log, and back.
    item_rng, text_rng, user_rng, log_rng = (np.random.default_rng([config.seed, s]) for s in range(4))
    items = _make_items(config, item_rng, text_rng)
    users = _make_users(config, user_rng)
    log = _simulate_log(config, log_rng, items, users)
    order = np.lexsort((log["item"], log["user"], log["ts"]))  # time order, ties fixed
    log = {name: value[order] for name, value in log.items()}
    interactions = pl.DataFrame({
        "user_id": (log["user"] + 1).astype(np.int64),
        "item_id": (log["item"] + 1).astype(np.int64),
        "timestamp": log["ts"].astype(np.int64),
        "device": np.array(DEVICES)[log["device"]],
        "click": log["click"].astype(np.int8),
        "like": log["like"].astype(np.int8),
    })
    truth = pl.DataFrame({n: log[n] for n in ("affinity", "p_click", "p_like")})
    return World(
        config=config, interactions=interactions, items=items["frame"], users=users["frame"],
        truth=truth, item_topic=items["topic"], item_style=items["style"],
        item_quality=items["quality"], item_release_day=items["release"],
        user_pref=users["pref"], user_taste=users["taste"],
    )


def dataset_spec() -> DatasetSpec:
    """The ``dataset.toml`` of every synthetic world."""
    return DatasetSpec(
        name="synthetic-world",
        interactions=InteractionsSpec(file="interactions.parquet", user="user_id", item="item_id",
                                      timestamp="timestamp", labels=["click", "like"],
                                      categorical=["device"]),
        items=ItemsSpec(file="items.parquet", id="item_id", text=["title", "genre", "description"],
                        image="image", categorical=["brand", "year"]),
        users=UsersSpec(file="users.parquet", id="user_id", categorical=["age_group", "region"]),
    )


def _write(world: World, root: Path, progress: bool) -> None:
    cfg = world.config
    (root / "dataset.toml").write_text(spec_to_toml(dataset_spec()), encoding="utf-8")
    # Fixed writer settings: the bytes depend on the data (and the polars version) only.
    opts: dict[str, Any] = {"compression": "zstd", "compression_level": 3, "statistics": True}
    world.interactions.write_parquet(root / "interactions.parquet", row_group_size=1 << 20, **opts)
    world.items.write_parquet(root / "items.parquet", **opts)
    world.users.write_parquet(root / "users.parquet", **opts)
    (root / "images").mkdir()
    write_images(root, world.items["image"].to_list(), world.item_topic, world.item_style,
                 cfg.n_topics, cfg.image_size, cfg.image_noise, cfg.seed, progress)


def synthesize(out_dir: Path, config: SynthConfig | None = None, progress: bool = False,
               overwrite: bool = False) -> Path:
    """Writes the synthetic world to ``out_dir`` and returns it.

    Written atomically: built in a temporary directory next to ``out_dir`` and renamed into
    place, so a crash never leaves a half-written dataset.

    Raises:
        DataError: ``out_dir`` exists and is not empty (and ``overwrite`` is false), or a knob
            is out of range.
    """
    config = config or SynthConfig()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(Problem(str(out_dir), "output path exists and is not a directory"))
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(Problem(str(out_dir), "output directory exists and is not empty; "
                                "pass --overwrite to replace it"))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the dataset is an ordinary directory
    try:
        world = simulate(config)
        if progress:
            print(f"synth: {world.interactions.height} impressions from {config.n_users} users "
                  f"over {config.n_days} days; writing {out_dir}", file=sys.stderr)
        _write(world, tmp, progress)
        if out_dir.exists():
            old = out_dir.with_name(tmp.name + ".old")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


CLI_NAMES = {"n_users": "users", "n_items": "items", "n_days": "days", "n_topics": "topics"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--out``, ``--overwrite`` and one ``--<knob>`` per SynthConfig field."""
    parser.add_argument("--out", type=Path, required=True, help="output dataset directory")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    for f in fields(SynthConfig):
        flag = "--" + CLI_NAMES.get(f.name, f.name).replace("_", "-")
        parser.add_argument(flag, dest=f.name, type=type(f.default), default=f.default,
                            help=f"{f.metadata['help']} (default {f.default})")


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """The config that ``add_arguments``' flags describe (raises DataError on a bad value)."""
    return SynthConfig(**{f.name: getattr(args, f.name) for f in fields(SynthConfig)})


def main(argv: list[str] | None = None) -> int:
    """``python -m data.synth --out DIR [--users N ...]``; the ``recsys`` CLI wraps the same."""
    parser = argparse.ArgumentParser(prog="python -m data.synth", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        synthesize(args.out, config_from_args(args), progress=True, overwrite=args.overwrite)
    except DataError as err:
        for p in err.problems:
            print(f"error: {p}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
