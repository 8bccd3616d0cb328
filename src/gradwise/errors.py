"""The one exception for a user's mistake (a config key, a value, a file, a dataset)."""


class UserError(ValueError):
    """Bad input from the user: the message names the culprit and what is accepted.

    The command line prints the message alone (no traceback) and exits with status 2.
    """
