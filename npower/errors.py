"""The one exception type for mistakes a user can cause (bad files, bad packs, bad arguments)."""


class NpowerError(Exception):
    """An error with a message written for the user; the CLI prints it on one line and exits 2."""
