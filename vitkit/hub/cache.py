"""Where downloads live and whether the network may be used: `$VITKIT_CACHE` (else the platform's user cache
folder), `VITKIT_OFFLINE=1` (and `HF_HUB_OFFLINE=1` for Hugging Face repositories), read at every call so that a
program or a test can change them while running."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

TRUE_VALUES = {"1", "true", "yes", "on"}


def cache_dir() -> Path:
    """The folder vitkit downloads into: `$VITKIT_CACHE`, else the platform's user cache folder."""
    if os.environ.get("VITKIT_CACHE"):
        return Path(os.environ["VITKIT_CACHE"]).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / "vitkit" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "vitkit"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg and os.path.isabs(xdg) else home / ".cache") / "vitkit"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE_VALUES


def offline() -> bool:
    """`VITKIT_OFFLINE=1`: serve only what is cached, never open a connection."""
    return _flag("VITKIT_OFFLINE")


def hf_offline() -> bool:
    """Offline for Hugging Face repositories: vitkit's switch or the hub library's own (`HF_HUB_OFFLINE`)."""
    return offline() or _flag("HF_HUB_OFFLINE") or _flag("TRANSFORMERS_OFFLINE")


def hf_cache_dir() -> Path | None:
    """huggingface_hub's cache as its environment variables say now (the library reads them once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return None  # the library's default


_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@,-]")


def _safe_part(part: str) -> str:
    part = _UNSAFE.sub("_", unquote(part))
    return "_" + part if part in ("", ".", "..") else part


def url_cache_path(url: str) -> Path:
    """The cache file for a URL, readable: `<cache>/urls/<host>/<path>` (a query string adds a folder named by its
    hash). Mirrors are not part of the name: the same file from a mirror is the same cache entry."""
    parts = urlsplit(url)
    host = parts.hostname or "_"
    if parts.port:
        host = f"{host}_{parts.port}"
    segments = [_safe_part(s) for s in parts.path.split("/") if s]
    if not segments:
        segments = ["index"]
    if parts.query:
        segments.insert(-1, "q-" + hashlib.sha256(parts.query.encode()).hexdigest()[:12])
    return cache_dir().joinpath("urls", _safe_part(host), *segments)
