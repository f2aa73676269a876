"""Errors of the edit store; their messages are shown to the user as they are."""

from wise_gui.core.errors import WiseGuiError


class StoreError(WiseGuiError):
    """The workspace database cannot be opened or changed as asked."""


class FingerprintMismatch(StoreError):
    """The workspace was created for another model than the one loaded now."""
