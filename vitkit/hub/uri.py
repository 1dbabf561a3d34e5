"""The addresses vitkit fetches from, and the environment variables that point each source at a mirror.

    hf-hub:ORG/REPO[@REV]   a Hugging Face repository (timm's spelling); hf://ORG/REPO[@REV] is the same
    https://... http://...  one file
    gs://BUCKET/PATH        a public Google Cloud Storage object: https://storage.googleapis.com/BUCKET/PATH
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import DownloadError

# Canonical base URL of a source, and the environment variable that replaces it (a mirror, or a local server in the
# tests). Cache entries are named by the canonical URL, so a file fetched from a mirror is found again without it.
# Hugging Face repositories follow huggingface_hub's own HF_ENDPOINT.
MIRRORS = (
    # canonical base                     environment variable          serves
    ("https://storage.googleapis.com",   "VITKIT_GCS_URL",             "the original and augreg .npz files (gs://)"),
    ("https://download.pytorch.org",     "VITKIT_TORCHVISION_URL",     "torchvision's weights"),
    ("https://github.com",               "VITKIT_GITHUB_URL",          "release assets (timm's older weights)"),
    ("https://dl.fbaipublicfiles.com",   "VITKIT_FBAIPUBLICFILES_URL", "DeiT's weights"),
)

HF_SCHEMES = ("hf-hub:", "hf://")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def fetch_url(url: str) -> str:
    """The URL to actually request for a canonical URL: the same, or its mirror's when the variable is set."""
    for base, variable, _ in MIRRORS:
        mirror = os.environ.get(variable, "").strip()
        if not mirror:
            continue
        for scheme in ("https://", "http://"):  # http:// of the same host is the same source
            canonical = scheme + base.split("://", 1)[1]
            if url == canonical or url.startswith(canonical + "/"):
                return mirror.rstrip("/") + url[len(canonical):]
    return url


def is_uri(source) -> bool:
    """Whether `source` names something to download (hf-hub:, hf://, https://, http://, gs://), not a local path."""
    if not isinstance(source, str):
        return False
    lowered = source.lower()
    return lowered.startswith(HF_SCHEMES + ("https://", "http://", "gs://"))


@dataclass(frozen=True)
class HubRepo:
    """A Hugging Face repository and revision (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"hf-hub:{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def parse_uri(uri: str) -> HubRepo | str:
    """A `HubRepo` for hf-hub:/hf:// URIs, else the canonical https/http URL of the file."""
    lowered = uri.lower()
    for scheme in HF_SCHEMES:
        if lowered.startswith(scheme):
            rest = uri[len(scheme):]
            repo_id, at, revision = rest.partition("@")
            if not _REPO_ID.match(repo_id) or (at and not revision):
                raise DownloadError(uri, "expected hf-hub:ORG/REPO or hf-hub:ORG/REPO@REVISION (a repository, not a "
                                         "file inside one)")
            return HubRepo(repo_id, revision or None)
    if lowered.startswith("gs://"):
        bucket_path = uri[len("gs://"):]
        if "/" not in bucket_path.strip("/"):
            raise DownloadError(uri, "expected gs://BUCKET/PATH")
        return "https://storage.googleapis.com/" + bucket_path.lstrip("/")
    if lowered.startswith(("https://", "http://")):
        if not urlsplit(uri).hostname:
            raise DownloadError(uri, "no host in the URL")
        return uri
    raise DownloadError(uri, "not a URI vitkit downloads: expected hf-hub:ORG/REPO[@REV], https://..., http://... or "
                             "gs://BUCKET/PATH")


def resolve_uri(uri: str, *, sha256: str | None = None, progress: bool | None = None) -> Path:
    """A local path that `vitkit.load` reads, for a URI: the cached file (downloaded if needed) for https/http/gs;
    for a Hugging Face repository, its snapshot folder (transformers layout) or its weights file (timm layout)."""
    from .download import download_hf, download_url, hf_weights_path

    target = parse_uri(uri)
    if isinstance(target, HubRepo):
        folder = download_hf(target.repo_id, target.revision, sha256=sha256)
        return hf_weights_path(folder, str(target))
    return download_url(target, sha256=sha256, progress=progress)
