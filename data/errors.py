"""Errors for bad input data: each problem names the file, the column and the first bad row."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file.

    ``row`` is the 1-based data row (header not counted) of the first offending row, or None
    where the problem is not about a row (a missing file or column).
    """

    file: str
    message: str
    column: str | None = None
    row: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.column is not None:
            where += f", column '{self.column}'"
        if self.row is not None:
            where += f", row {self.row}"
        return one_line(f"{where}: {self.message}")


def one_line(text: str) -> str:
    """``text`` with control characters (a newline, a NUL inside a bad value) written as
    escapes, so that one problem stays one line however hostile the value it quotes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class DataError(Exception):
    """Raised when a dataset violates the contract; carries every problem found.

    The CLI prints one line per problem and exits with status 2.
    """

    def __init__(self, problems: list[Problem] | Problem) -> None:
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        if not self.problems:
            raise ValueError("DataError needs at least one problem")
        super().__init__("\n".join(str(p) for p in self.problems))


class ProblemList:
    """Collects problems during validation so that one run reports all of them."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, file: str, message: str, column: str | None = None, row: int | None = None) -> None:
        self.problems.append(Problem(file=file, message=message, column=column, row=row))

    def raise_if_any(self) -> None:
        if self.problems:
            raise DataError(self.problems)
