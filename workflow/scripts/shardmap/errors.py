"""The one exception type users see for bad input."""


class InputError(ValueError):
    """Bad user input: the message names the file, id or key and says how to fix it."""
