"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input: the message says what is wrong and what to do about it."""
