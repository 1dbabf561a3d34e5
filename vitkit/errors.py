"""Errors vitkit raises on bad input."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as a model: missing, unexpected or mis-shaped tensors, an unknown
    layout, a truncated or corrupt file. The message names the file, the key, and the expected and found shapes."""

    def __init__(self, path, message: str, key: str | None = None):
        self.path = str(path)
        self.key = key
        where = f"{self.path}" + (f", key {key!r}" if key else "")
        super().__init__(f"{where}: {message}")


class UsageError(ValueError):
    """Bad input from the command line or the caller (a wrong path, an empty data folder, ...): the command line
    prints it as one line and exits with code 2."""


class GuessWarning(UserWarning):
    """A checkpoint did not record a value that decides the model (a timm state dict's head count, say), so `load`
    assumed one; the message names each guess and the keyword that says it instead."""
