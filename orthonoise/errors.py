"""The exception types for bad input: caught by train.py and shown as a single line, no traceback."""


class ConfigError(ValueError):
    """A setting, file, model or device that cannot work; raised before any compute."""


class RunRefused(ConfigError):
    """The run directory cannot take this launch (another live process holds it, or it belongs to another config
    or code version): nothing in it was changed, so its summary stays what its own run wrote."""


class ArgumentError(ConfigError):
    """One constructor argument out of range, as data: `name` (the argument, which the config check maps to its
    config key), `value` and `requirement` (what is allowed, e.g. "≥ 0"). Reads "<name> must be <requirement>,
    got <value>"."""

    def __init__(self, name: str, value, requirement: str):
        super().__init__(f"{name} must be {requirement}, got {value!r}")
        self.name, self.value, self.requirement = name, value, requirement
