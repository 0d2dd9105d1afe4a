"""Exceptions raised for user and data mistakes.

Every error a user can cause (a bad file, a bad config value) is raised as a
`CardiacNetsError` subclass with a message that names the file or key and the
problem, so that the command line can print one clear line instead of a
traceback, and batch jobs can record the reason and move on.
"""

from __future__ import annotations

import os


class CardiacNetsError(Exception):
    """Base class of every error caused by user input or data."""


class InputError(CardiacNetsError, ValueError):
    """A data file cannot be read or fails validation.

    Args:
        path: the offending file (or folder).
        problem: what is wrong with it, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # rebuilt from (path, problem) when raised in a worker process
        return type(self), (self.path, self.problem)


class ConfigError(CardiacNetsError, ValueError):
    """A configuration file or override is invalid (unknown key, wrong type)."""
