"""The one error type of the client: something the user can act on, printed without a traceback."""


class ClientError(Exception):
    """A failure with a message that says what went wrong and what to do about it."""
