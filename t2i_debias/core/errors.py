"""Exceptions for a user's mistake (bad config, missing or malformed input), as opposed to a bug.

The command-line scripts print a `UserError` as one line naming the file and the fix (the
traceback only with --verbose); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; the message says what is wrong, where, and what to do."""


class InputError(UserError, ValueError):
    """An input file whose content cannot be used; the message names the file (and line)."""


class RunLockedError(UserError, RuntimeError):
    """Another process is writing the same run folder (or the same labels journal)."""


class MissingInputError(UserError, FileNotFoundError):
    """An input that does not exist or whose producing stage did not finish."""


class ConfigError(UserError, ValueError):
    """A config file or flag that cannot be used; the message names the file and the key."""
