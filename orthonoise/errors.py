"""The one exception type for bad input: caught by train.py and shown as a single line, no traceback."""


class ConfigError(ValueError):
    """A setting, file, model or device that cannot work; raised before any compute."""
