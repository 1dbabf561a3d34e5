"""Fetching files into the cache: one small HTTP downloader for plain URLs, huggingface_hub for repositories.

`download_url` streams into `<file>.part` with a progress bar, resumes a partial file with an HTTP Range request,
retries 5xx answers and dropped connections with exponential back-off, and renames the `.part` over the final name
only once its size and SHA-256 are right; a file lock beside it makes a second process wait for the first and then
find the file cached. A `<file>.sha256` sidecar records the hash of a verified file, so checking a cached file
against a given hash does not read it again. Every failure is a one-line `DownloadError` naming the URL.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import DownloadError
from ..files import fsync_dir
from .cache import cache_dir, hf_cache_dir, hf_offline, offline, url_cache_path
from .uri import fetch_url

CHUNK_BYTES = 1 << 20
DEFAULT_TRIES = 4  # attempts per download without progress; a try that received bytes resets the count
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
READ_ONLY_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}

# What vitkit reads from a Hugging Face repository: the configs and one set of weights (safetensors when the
# repository has them, else the PyTorch pickle). Nothing else (no Flax/TF weights, no README, no ONNX).
HF_CONFIG_FILES = ("config.json", "preprocessor_config.json")
HF_SAFETENSORS_FILES = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json")
HF_TORCH_FILES = ("pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json")


def _retry_backoff() -> float:
    """Seconds before the first retry; each further retry waits twice as long (VITKIT_RETRY_BACKOFF, default 1)."""
    try:
        return max(0.0, float(os.environ.get("VITKIT_RETRY_BACKOFF", "1")))
    except ValueError:
        return 1.0


def _tries() -> int:
    try:
        return max(1, int(os.environ.get("VITKIT_DOWNLOAD_TRIES", DEFAULT_TRIES)))
    except ValueError:
        return DEFAULT_TRIES


def _timeout() -> float:
    """Seconds a connection may stay silent before it counts as dropped (VITKIT_DOWNLOAD_TIMEOUT, default 60)."""
    try:
        return max(0.1, float(os.environ.get("VITKIT_DOWNLOAD_TIMEOUT", "60")))
    except ValueError:
        return 60.0


def _normalise_sha256(sha256: str | None, url: str) -> str | None:
    if sha256 is None:
        return None
    digest = str(sha256).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise DownloadError(url, f"sha256={sha256!r} is not a SHA-256 (64 hexadecimal digits)")
    return digest


# ------------------------------------------------------------------------------------------- hashes of files
def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns}"


def _recorded_sha256(path: Path, sidecar: Path) -> str | None:
    """The hash a sidecar records, if it still describes the file (same size and modification time)."""
    try:
        digest, stamp = sidecar.read_text().strip().split(" ", 1)
        return digest if stamp == _stamp(path) else None
    except (OSError, ValueError):
        return None


def _record_sha256(path: Path, digest: str, sidecar: Path) -> None:
    tmp = sidecar.with_name(sidecar.name + f".{os.getpid()}.tmp")
    try:
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(f"{digest} {_stamp(path)}\n")
        os.replace(tmp, sidecar)
    except OSError:  # a read-only cache still serves its files; they are hashed again next time
        with contextlib.suppress(OSError):
            tmp.unlink()


def file_sha256(path: Path, sidecar: Path | None = None) -> str:
    """SHA-256 of a file, read from its sidecar when that is current, else computed (and recorded)."""
    sidecar = sidecar or _sidecar(path)
    digest = _recorded_sha256(path, sidecar)
    if digest is None:
        hasher = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK_BYTES), b""):
                hasher.update(block)
        digest = hasher.hexdigest()
        _record_sha256(path, digest, sidecar)
    return digest


# ------------------------------------------------------------------------------------------------ plain URLs
def download_url(url: str, *, sha256: str | None = None, progress: bool | None = None) -> Path:
    """The cached copy of `url`, downloaded first if needed; `sha256` (hex) is checked, also on a cached file.

    progress: None shows a progress bar when stderr is a terminal (tqdm's convention), True always, False never.
    Mirrors: see `vitkit.hub.uri.MIRRORS`; the cache path is that of the canonical URL either way.
    """
    sha256 = _normalise_sha256(sha256, url)
    final = url_cache_path(url)
    source = fetch_url(url)
    name = source if source == url else f"{source} (mirror of {url})"
    if _cached_and_right(final, sha256):
        return final
    if offline():
        if final.is_file():
            raise DownloadError(url, f"the cached file {final} has SHA-256 {file_sha256(final)}, expected {sha256}, "
                                     "and offline mode (VITKIT_OFFLINE=1) forbids fetching it again")
        raise DownloadError(url, f"not in the cache ({final}) and offline mode is on (VITKIT_OFFLINE=1); on a machine "
                                 "with internet run `vitkit download` on it (or load it once), then copy that "
                                 f"machine's cache folder here ({cache_dir()}) or point VITKIT_CACHE at the copy")
    _make_folder(final.parent, url)
    from filelock import FileLock, Timeout

    lock = FileLock(str(final) + ".lock")
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if progress is not False:
                print(f"vitkit: waiting for another process downloading {final.name}", file=sys.stderr)
            lock.acquire()
    except OSError as e:
        raise _read_only(url, final.parent, e) from None
    try:
        if final.is_file():  # fetched by the process we waited for, or cached with another hash
            if _cached_and_right(final, sha256):
                return final
            _discard(final)
        _fetch(source, name, final, sha256, progress)
        return final
    finally:
        lock.release()


def _cached_and_right(final: Path, sha256: str | None) -> bool:
    return final.is_file() and (sha256 is None or file_sha256(final) == sha256)


def _discard(path: Path) -> None:
    for p in (path, _sidecar(path)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _make_folder(folder: Path, url: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".vitkit-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise _read_only(url, folder, e) from None


def _read_only(url: str, folder: Path, e: OSError) -> DownloadError:
    why = e.strerror or type(e).__name__
    return DownloadError(url, f"cannot write to the cache folder {folder} ({why}); make it writable or set "
                              "VITKIT_CACHE to a writable folder")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("vitkit")
    except Exception:  # not installed (run from a source tree)
        return "dev"


def _user_agent() -> str:
    return f"vitkit/{_version()} (Python urllib)"


class _Cut(Exception):
    """The body ended (or the connection dropped) before the whole file arrived."""


def _fetch(source: str, name: str, final: Path, sha256: str | None, progress: bool | None) -> None:
    """Download `source` into `final` through `final.part`, resuming and retrying; see the module docstring."""
    part = final.with_name(final.name + ".part")
    tries, failures, resumable = _tries(), 0, True
    while True:
        if failures:
            time.sleep(_retry_backoff() * 2 ** (failures - 1))
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = urllib.request.urlopen(urllib.request.Request(source, headers=headers), timeout=_timeout())
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and offset:  # the partial file is not a prefix the server knows: start over
                _discard(part)
                problem = "the server refused to resume (HTTP 416)"
            elif e.code in RETRY_STATUS or e.code >= 500:
                problem = f"HTTP {e.code} {e.reason}".strip()
            else:
                raise _give_up(name, part, resumable, _http_error_message(e.code, str(e.reason or ""))) from None
            failures += 1
            if failures >= tries:
                raise _give_up(name, part, resumable, f"{problem} after {tries} tries") from None
            continue
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            failures += 1
            if failures >= tries:
                raise _give_up(name, part, resumable, f"{_connection_problem(source, e)} (after {tries} tries)") \
                    from None
            continue

        with response:
            resumable = response.status == 206 or response.headers.get("Accept-Ranges", "").lower() == "bytes"
            try:
                digest = _receive(response, source, name, final, part, offset, progress)
            except _Cut as e:
                received, problem = e.args
                failures = 1 if received else failures + 1  # progress made: this drop gets a fresh set of tries
                if failures >= tries:
                    raise _give_up(name, part, resumable, f"the transfer was cut off ({problem}) after {tries} "
                                                          "tries") from None
                continue
        break

    if sha256 is not None and digest != sha256:
        _discard(part)
        raise DownloadError(name, f"SHA-256 mismatch: expected {sha256}, got {digest}; the download was discarded")
    os.replace(part, final)
    fsync_dir(final.parent)
    _record_sha256(final, digest, _sidecar(final))


def _give_up(name: str, part: Path, resumable: bool, problem: str) -> DownloadError:
    """The error that ends a download; a partial file stays only where the next run can resume it."""
    if part.exists() and part.stat().st_size and resumable:
        return DownloadError(name, f"{problem}; the partial file {part} is kept: run again to resume")
    kept = part.exists() and part.stat().st_size
    _discard(part)
    if kept:
        return DownloadError(name, f"{problem}; the server cannot resume, so the partial file was removed")
    return DownloadError(name, problem)


def _receive(response, source: str, name: str, final: Path, part: Path, offset: int, progress) -> str:
    """Stream one response into `part` from `offset`; the hex SHA-256 of the whole file when complete.
    Raises _Cut(bytes_received, why) when the body stops short."""
    from tqdm.auto import tqdm

    status = response.status
    if offset and status == 200:  # the server ignored Range and sends the whole file: start again from 0
        offset = 0
    elif status == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if not match or int(match.group(1)) != offset:
            _discard(part)
            raise _Cut(0, f"the server resumed at another offset ({response.headers.get('Content-Range')!r})")
    content_type = response.headers.get_content_type()
    wants_html = urlsplit(source).path.lower().endswith((".html", ".htm"))
    if content_type == "text/html" and not wants_html:
        _discard(part)
        raise DownloadError(name, f"the server sent an HTML page (HTTP {status}, Content-Type text/html) instead of "
                                  "the file: an error or login page, or a wrong URL")
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length and length.isdigit() else None

    hasher = hashlib.sha256()
    if offset:
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(CHUNK_BYTES), b""):
                hasher.update(block)
    received = 0
    bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=final.name,
               disable=None if progress is None else not progress, leave=False)
    try:
        with _writing(part, "ab" if offset else "wb", name) as f:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as e:
                    raise _Cut(received, _connection_problem(source, e)) from None
                if not chunk:
                    break
                if not offset and not received and _looks_like_html(chunk) and not wants_html:
                    f.close()
                    _discard(part)
                    raise DownloadError(name, f"the server sent an HTML page (HTTP {status}, labelled "
                                              f"{content_type} but starting with an HTML tag) instead of the file: "
                                              "an error or login page, or a wrong URL")
                f.write(chunk)
                hasher.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    finally:
        bar.close()
    size = offset + received
    if total is not None and size < total:
        raise _Cut(received, f"{size} of {total} bytes received")
    if total is not None and size > total:
        _discard(part)
        raise DownloadError(name, f"size mismatch: the server announced {total} bytes and sent {size}; the download "
                                  "was discarded")
    return hasher.hexdigest()


@contextlib.contextmanager
def _writing(part: Path, mode: str, name: str):
    """Open the .part file; a full disk removes it and a read-only folder is named, each as one line."""
    try:
        with open(part, mode) as f:
            yield f
    except OSError as e:
        if e.errno == errno.ENOSPC:
            _discard(part)
            raise DownloadError(name, f"no space left on the device while writing {part}; the partial file was "
                                      "removed: free some space or set VITKIT_CACHE to a folder on another disk") \
                from None
        if e.errno in READ_ONLY_ERRNOS:
            raise _read_only(name, part.parent, e) from None
        raise


def _looks_like_html(chunk: bytes) -> bool:
    head = chunk[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _connection_problem(source: str, e: BaseException) -> str:
    reason = getattr(e, "reason", e)
    host = urlsplit(source).netloc
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused by {host}"
    if isinstance(reason, TimeoutError):
        return f"no answer from {host} within {_timeout():g} s"
    if isinstance(reason, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return f"connection to {host} dropped"
    if isinstance(reason, http.client.IncompleteRead):
        return f"connection to {host} dropped mid-file"
    if isinstance(reason, http.client.RemoteDisconnected):
        return f"{host} closed the connection without an answer"
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return f"cannot reach {host}: {text.splitlines()[0] if text.strip() else type(reason).__name__}"


def _http_error_message(code: int, reason: str) -> str:
    if code == 404:
        return "not found (HTTP 404)"
    if code in (401, 403):
        return f"access denied (HTTP {code} {reason}); the file is not public or the URL is wrong".replace(" )", ")")
    return f"HTTP {code} {reason}".strip()


# ------------------------------------------------------------------------------------ Hugging Face repositories
def download_hf(repo_id: str, revision: str | None = None, *, allow_patterns: list[str] | None = None,
                sha256: str | None = None) -> Path:
    """A local snapshot folder of a Hugging Face repository, through `huggingface_hub.snapshot_download` (its cache,
    HF_ENDPOINT, HF_HUB_OFFLINE and HF_TOKEN, read at this call; VITKIT_OFFLINE=1 also serves only the cache).

    Only what vitkit reads is fetched: config.json, preprocessor_config.json and the safetensors weights, or the
    PyTorch weights when the repository has no safetensors (or `allow_patterns`, if given). `sha256` checks the
    single weights file.
    """
    name = f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
    sha256 = _normalise_sha256(sha256, name)
    if allow_patterns is not None:
        folder = _snapshot(repo_id, revision, list(allow_patterns), name)
    else:
        folder = _snapshot(repo_id, revision, [*HF_CONFIG_FILES, *HF_SAFETENSORS_FILES], name)
        if not any(folder.glob("*.safetensors")):
            folder = _snapshot(repo_id, revision, [*HF_CONFIG_FILES, *HF_TORCH_FILES], name)
        if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
            raise DownloadError(name, "the repository has no weights vitkit reads (model.safetensors or "
                                      "pytorch_model.bin, or their shards)")
    if sha256 is not None:
        _check_hf_weights(folder, sha256, name)
    return folder


def _hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _snapshot(repo_id: str, revision: str | None, patterns: list[str], name: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hf_errors

    endpoint = _hf_endpoint()
    offline_now = hf_offline()
    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=hf_cache_dir(), local_files_only=offline_now,
            allow_patterns=patterns, endpoint=endpoint, library_name="vitkit", library_version=_version())
    except hf_errors.GatedRepoError:
        raise DownloadError(name, f"the repository on {endpoint} is gated: accept its terms on the website and set "
                                  "HF_TOKEN") from None
    except hf_errors.RepositoryNotFoundError as e:
        code = getattr(getattr(e, "response", None), "status_code", None)
        raise DownloadError(name, f"no such repository on {endpoint}" + (f" (HTTP {code})" if code else "") +
                                  "; a private repository needs HF_TOKEN") from None
    except hf_errors.RevisionNotFoundError:
        raise DownloadError(name, f"no revision {revision!r} in the repository on {endpoint}") from None
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled,
            getattr(hf_errors, "IncompleteSnapshotError", hf_errors.LocalEntryNotFoundError)) as e:
        if offline_now or isinstance(e, hf_errors.OfflineModeIsEnabled):
            where = hf_cache_dir() or "the default ~/.cache/huggingface/hub"
            raise DownloadError(name, f"not in the Hugging Face cache ({where}) and offline mode is on "
                                      "(VITKIT_OFFLINE or HF_HUB_OFFLINE); on a machine with internet run `vitkit "
                                      f"download {name}`, then copy its Hugging Face cache folder here (HF_HUB_CACHE "
                                      "or HF_HOME point at it)") from None
        cause = e.__cause__ or e.__context__ or e
        raise DownloadError(name, f"cannot reach {endpoint}: {_first_line(cause)}") from None
    except hf_errors.HfHubHTTPError as e:
        raise DownloadError(name, f"{endpoint}: {_first_line(e)}") from None
    except OSError as e:
        if isinstance(e, DownloadError):
            raise
        if e.errno == errno.ENOSPC:
            raise DownloadError(name, "no space left on the device while writing the Hugging Face cache "
                                      f"({hf_cache_dir() or 'the default'}); free some space or set HF_HUB_CACHE "
                                      "to a folder on another disk") from None
        if e.errno in READ_ONLY_ERRNOS:
            raise DownloadError(name, f"cannot write to the Hugging Face cache ({getattr(e, 'filename', None) or ''}: "
                                      f"{e.strerror}); set HF_HUB_CACHE or HF_HOME to a writable folder") from None
        raise DownloadError(name, _first_line(e)) from None
    except Exception as e:  # httpx errors that huggingface_hub lets through (a connection refused mid-download...)
        if type(e).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "huggingface_hub"):
            raise DownloadError(name, f"{endpoint}: {_first_line(e)}") from None
        raise
    return Path(folder)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)


def _check_hf_weights(folder: Path, sha256: str, name: str) -> None:
    """Check the repository's single weights file against `sha256`; a wrong file is removed from the cache."""
    files = sorted(p for p in folder.iterdir() if p.name in ("model.safetensors", "pytorch_model.bin"))
    if not files:
        raise DownloadError(name, "sha256= checks a single weights file, and this repository's weights are sharded")
    weights = files[0]
    blob = weights.resolve()
    sidecar = cache_dir() / "hf-sha256" / (hashlib.sha256(str(blob).encode()).hexdigest()[:32] + ".sha256")
    digest = file_sha256(blob, sidecar)
    if digest != sha256:
        for p in (weights, blob, sidecar):
            with contextlib.suppress(OSError):
                p.unlink()
        raise DownloadError(name, f"SHA-256 mismatch of {weights.name}: expected {sha256}, got {digest}; the file "
                                  "was removed from the cache")


def hf_weights_path(folder: Path, name: str = "") -> Path:
    """What `vitkit.load` reads from a snapshot: the folder, whose config.json settles what the weights cannot (a
    transformers `model_type` or a timm `architecture`); else its weights file."""
    config_path = folder / "config.json"
    config = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError):
            config = {}
    if isinstance(config, dict) and ("model_type" in config or "architecture" in config):
        return folder
    for weights in ("model.safetensors", "pytorch_model.bin"):
        if (folder / weights).is_file():
            return folder / weights
    return folder
