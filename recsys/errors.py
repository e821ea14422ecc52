"""Errors that the CLI reports as bad input (exit status 2) rather than as bugs."""

from __future__ import annotations


class UsageError(Exception):
    """A bad config value, option or argument; ``problems`` holds one message per problem."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))
