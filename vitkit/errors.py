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


class DownloadError(OSError):
    """A file that could not be fetched or served from the cache: a missing URL, a refused connection, a transfer
    cut off, an HTML page instead of a checkpoint, a wrong SHA-256, offline mode with nothing cached, a full disk, a
    read-only cache. An OSError, so the command line prints its one-line message and exits with code 2."""

    def __init__(self, url, message: str):
        self.url = str(url)
        super().__init__(f"{self.url}: {message}")

    def __str__(self) -> str:  # OSError's own __str__ would show the args tuple for some argument counts
        return self.args[0]

    def __reduce__(self):  # survives pickling (multiprocessing workers), whose default would call __init__(message)
        return (_download_error, (self.url, self.args[0]))


def _download_error(url: str, full_message: str) -> DownloadError:
    error = DownloadError(url, "")
    error.args = (full_message,)
    return error


class GuessWarning(UserWarning):
    """A checkpoint did not record a value that decides the model (a timm state dict's head count, say), so `load`
    assumed one; the message names each guess and the keyword that says it instead (`what`: the message without that
    advice, `guessed`: keyword -> value assumed)."""

    what: str = ""
    guessed: dict = {}
