"""Errors a user can cause and fix; the entry points print them as one sentence, no traceback."""


class UserError(Exception):
    """A problem with the user's config, data or environment, with a message that says what to do."""


class ConfigError(UserError):
    """A config value is missing, of the wrong kind or out of range."""


class DataError(UserError):
    """The data is missing, unreadable or not what the config says it is."""
