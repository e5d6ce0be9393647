"""The one exception type that reaches the user as a one-line message (exit code 2)."""


class CLLMError(Exception):
    """A problem with the user's input or environment: shown as one line, exit code 2, no traceback."""
