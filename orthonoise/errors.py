"""The exception types for bad input: caught by train.py and shown as a single line, no traceback."""


class ConfigError(ValueError):
    """A setting, file, model or device that cannot work; raised before any compute."""


class RunRefused(ConfigError):
    """The run directory cannot take this launch (another live process holds it, or it belongs to another config
    or code version): nothing in it was changed, so its summary stays what its own run wrote."""
