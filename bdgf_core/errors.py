"""Errors the runtime reports to users as one line."""


class BdgfError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class Cancelled(BdgfError):
    """The user cancelled the run; nothing partial is left behind."""

    def __init__(self, message: str = "cancelled by the user; no output was written") -> None:
        super().__init__(message)
