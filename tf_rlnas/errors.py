"""User-facing errors.

Anything the user can fix (a config key, a path, a shape, a corrupt file) raises a
:class:`UserError`. The CLI turns it into one line on stderr and exit code 2, before
anything is written.
"""


class UserError(Exception):
    """A mistake in the user's input; reported as one line, exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """A config file, key, type or value is wrong."""
