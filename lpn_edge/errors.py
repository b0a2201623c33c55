"""The one exception type the command line turns into a one-line message."""


class LpnEdgeError(Exception):
    """A user-facing error: bad input, a missing file, a refused combination.

    The message must say what was wrong and where (file, key or value) and what was expected.
    """
