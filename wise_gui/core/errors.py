"""The one exception family whose messages are shown to the user as they are (dialog or stderr)."""


class WiseGuiError(Exception):
    """An expected failure with a message written for the user; never shown as a traceback."""
