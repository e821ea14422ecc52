"""A served model in this process: a serving package rebuilt through ``recsys.model.build.build_model``
and scored like ``recsys evaluate`` scores a split.

What the pyfunc model (``recsys.serving.pyfunc``), ``recsys predict`` and the packaging check
all use; none of them assembles the model another way.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from recsys.evaluation.predict import score_split
from recsys.model.build import apply_threads, build_model
from recsys.serving.encode import SERVE_SPLIT, encode_requests
from recsys.serving.package import Package, read_package
from recsys.serving.schema import prediction_column
from recsys.serving.validate import to_polars, validate_requests
from recsys.serving.world import open_world_of_one


class ServedModel:
    """The model of one serving package, ready to score request rows.

    Create it with :meth:`load`; :meth:`close` leaves the process group it opened (also safe
    to skip: the group then lives as long as the process).
    """

    def __init__(self, package: Package) -> None:
        self.package = package
        self.env, self._close = open_world_of_one()
        try:
            apply_threads(package.cfg)  # as recsys evaluate does: the same reduction order
            self.model = build_model(package.cfg, package.layout, package.tokens(), self.env,
                                     checkpoint=package.weights)
        except BaseException:
            self._close()
            raise
        self.model.eval()
        # One request at a time: the sharded model's collectives must not interleave.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, package_dir: str | Path) -> ServedModel:
        return cls(read_package(package_dir))

    @property
    def heads(self) -> tuple[str, ...]:
        return self.package.heads

    def predict(self, requests: pd.DataFrame | pl.DataFrame, source: str = "request",
                row_offset: int = 0) -> pl.DataFrame:
        """One probability column per head (``pred_<head>``, Float64) for each request row, in
        the rows' order.

        Args:
            requests: request rows (``recsys.serving.schema``).
            source: what the rows are called in an error (a file name).
            row_offset: rows of the input before these (errors name the input's row).

        Raises:
            DataError: a bad request, naming the column and the first bad row.
        """
        frame = to_polars(requests, source)
        if frame.height == 0:
            return pl.DataFrame({prediction_column(h): pl.Series([], dtype=pl.Float64)
                                 for h in self.heads})
        valid = validate_requests(frame, self.package.schema, source, row_offset)
        prepared = encode_requests(valid, self.package)
        # Batches of at most eval_batch_size rows; a smaller request is one batch of its own
        # size (score_split pads a world's last batch, which one process does not need).
        batch_size = min(self.package.cfg.train.eval_batch_size, valid.height)
        with self._lock:
            probs, _ = score_split(self.model, prepared, SERVE_SPLIT, batch_size, self.env.device)
        return pl.DataFrame({prediction_column(h): probs[h].astype(np.float64)
                             for h in self.heads})

    def close(self) -> None:
        self._close()
        self._close = lambda: None
