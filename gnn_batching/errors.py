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
