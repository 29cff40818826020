"""The one error type of the command line (kept apart so that ``completion`` and
``--help`` run without importing the Kubernetes client)."""

from __future__ import annotations


class CliError(Exception):
    """A failure the user can act on; ``main`` prints it as one line and exits non-zero."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code
