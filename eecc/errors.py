"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class EeccError(Exception):
    """A problem with the user's input that names what is wrong and how to fix it."""
