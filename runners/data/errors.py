"""The one error type data code raises for user mistakes; runners turn it into `error: ...` and exit 2."""


class DataError(Exception):
    """A user mistake (bad path, format, field, mixture): one line naming the problem and the fix."""
