"""User-facing errors: printed by the CLI as one clear line, never as a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input, bad config or a failed download: the message names the file/entry/key."""


class ConfigError(UserError, ValueError):
    """A config file or override is invalid (unknown key, wrong type, impossible value)."""


class DataError(UserError):
    """A dataset entry or file cannot be used; the message names the file and the entry."""


class OversizeGraphError(UserError, RuntimeError):
    """A graph does not fit the batch budget (policy `oversize: error`)."""


class BadEntryError(DataError):
    """One entry of a dataset cannot be used: the message names it and says how to skip such entries
    and what skipping counts (``dataset.skip_bad``)."""

    HINT = ("; to leave such entries out instead, set dataset.skip_bad: true (--set dataset.skip_bad=true; "
            "--skip-bad for `data stats` and `advise`): each skipped entry is named, left out of every split and "
            "counted (skipped_entries in the run's data.json; `data stats` lists them)")

    def __init__(self, message: str) -> None:
        super().__init__(message + self.HINT)
