"""The one error every kfx command turns into one `error:` line and exit code 2: a bad flag,
parameter, path or setting that a person can fix by changing the command."""


class UsageError(ValueError):
    """What the person asked for cannot be done as asked; the message says what to change."""
