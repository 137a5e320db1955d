"""The errors posepipe raises. Each names the input or setting at fault, so a
user sees what to fix without reading a traceback."""


class PosepipeError(Exception):
    """Base of every error posepipe raises on purpose."""


class InputError(PosepipeError, ValueError):
    """An input (file, folder, URL, array, base64 payload) cannot be used."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class ModelError(PosepipeError):
    """A model directory, model name or model file cannot be used."""


class ConfigError(PosepipeError, ValueError):
    """A pipeline config (YAML or dict) is malformed or names unknown values."""


class DeviceError(PosepipeError, ValueError):
    """A device string is unknown, or the installed Paddle cannot run on it."""


class DatasetError(PosepipeError, ValueError):
    """An evaluation dataset (its folder, annotation file or images) cannot be used."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")
