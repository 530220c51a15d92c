"""The one exception type for mistakes a user can cause (bad files, bad packs, bad arguments)."""


class NpowerError(Exception):
    """An error with a message written for the user; the CLI prints it on one line and exits 2."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line for a one-line report (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
