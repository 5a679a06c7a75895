"""The one exception type the command line turns into a one-line message (exit status 2)."""


class InputError(ValueError):
    """Bad input from the user: the message names the problem and the fix."""
