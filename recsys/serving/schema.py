"""The request schema of a served model (docs/serving.md, "Requests").

One request row asks for the scores of one (user, item) pair at one time:

- ``user_id``, ``item_id``: the dataset's ids (integers or strings, as the run's data had
  them); ids the run never trained on read the OOV rows (docs/design.md §2.3);
- ``timestamp``: when the request is made (integer seconds, a datetime or ISO-8601 text);
- every context column of the dataset (``[interactions] categorical``), under its own name;
- optional: ``history``, the user's recent positively labelled item ids, most recent first
  (a list; in CSV, ids separated by spaces); ``user_prior`` and ``item_prior``, the counts
  behind the prior-rate features (docs/design.md §4.4) as an object ``{"rows": n,
  "positives": k}`` (in CSV, two columns ``user_prior.rows`` and ``user_prior.positives``);
  and the user's side features (``[users] categorical``) under their own names. A null or
  absent value is taken from the snapshot that the model carries (the state at the end of
  the log it was packaged with).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data.spec import DatasetSpec
from recsys.errors import UsageError

USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
HISTORY = "history"
USER_PRIOR = "user_prior"
ITEM_PRIOR = "item_prior"
PRIOR_FIELDS = ("rows", "positives")  # the fields of a user_prior / item_prior object
RESERVED = (USER_ID, ITEM_ID, TIMESTAMP, HISTORY, USER_PRIOR, ITEM_PRIOR)
# The counts in a validated request frame (Int64, null = take the snapshot's).
USER_ROWS = "user_prior_rows"
USER_POSITIVES = "user_prior_positives"
ITEM_ROWS = "item_prior_rows"
ITEM_POSITIVES = "item_prior_positives"
COUNTS = {USER_PRIOR: (USER_ROWS, USER_POSITIVES), ITEM_PRIOR: (ITEM_ROWS, ITEM_POSITIVES)}
PREDICTION_PREFIX = "pred_"


def prediction_column(head: str) -> str:
    """The output column of head ``head``: ``pred_<head>``, as in a run's predictions."""
    return f"{PREDICTION_PREFIX}{head}"


@dataclass(frozen=True)
class RequestSchema:
    """The columns of a request to one served model.

    Attributes:
        context: the dataset's context columns, required (canonical name ``ctx_<c>``).
        user_features: the dataset's user side columns, optional (``user_<c>``).
        separators: column → separator of a multi-valued column sent as text.
        user_ids_integer: whether user ids are integers (else strings).
        item_ids_integer: whether item ids are integers (else strings).
        max_history: L; a longer ``history`` keeps its L most recent items.
    """

    context: tuple[str, ...]
    user_features: tuple[str, ...]
    separators: dict[str, str] = field(default_factory=dict)
    user_ids_integer: bool = True
    item_ids_integer: bool = True
    max_history: int = 50

    @classmethod
    def from_spec(cls, spec: DatasetSpec, user_ids_integer: bool, item_ids_integer: bool,
                  max_history: int) -> RequestSchema:
        """The schema of a model trained on data described by ``spec``.

        Raises:
            UsageError: a context or user column is named like a request column of its own
                (``history``, ``user_id``...), or the two sections share a column name.
        """
        context = tuple(spec.interactions.categorical)
        users = tuple(spec.users.categorical) if spec.users else ()
        clashes = sorted({c for c in (*context, *users)
                          if c in RESERVED or c.split(".")[0] in RESERVED}
                         | (set(context) & set(users)))
        if clashes:
            raise UsageError(f"cannot serve this dataset: column(s) {clashes} would have two "
                             f"meanings in a request (reserved names: {list(RESERVED)}; context "
                             "and user columns must differ); rename them in the dataset")
        separators = {**spec.interactions.multi_valued,
                      **(spec.users.multi_valued if spec.users else {})}
        return cls(context, users, separators, user_ids_integer, item_ids_integer, max_history)

    @property
    def required(self) -> tuple[str, ...]:
        return (USER_ID, ITEM_ID, TIMESTAMP, *self.context)

    @property
    def optional(self) -> tuple[str, ...]:
        return (HISTORY, USER_PRIOR, ITEM_PRIOR, *self.user_features)

    def to_dict(self) -> dict:
        return {"context": list(self.context), "user_features": list(self.user_features),
                "separators": dict(self.separators), "user_ids_integer": self.user_ids_integer,
                "item_ids_integer": self.item_ids_integer, "max_history": self.max_history}

    @classmethod
    def from_dict(cls, d: dict) -> RequestSchema:
        return cls(tuple(d["context"]), tuple(d["user_features"]), dict(d["separators"]),
                   bool(d["user_ids_integer"]), bool(d["item_ids_integer"]),
                   int(d["max_history"]))
