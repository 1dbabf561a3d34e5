"""Published weights by name or URI: the catalog (`catalog.py`), how a source becomes a local file (`resolve.py`),
and downloading into vitkit's cache (plain URLs) or huggingface_hub's (repositories).

    from vitkit.hub import resolve_uri
    path = resolve_uri("gs://vit_models/imagenet21k/ViT-B_16.npz")   # cached after the first call
    model = vitkit.load("vit-b16-in21k")                             # the same file, by its catalog name
"""

from .cache import cache_dir, offline, url_cache_path
from .catalog import CATALOG, PretrainedCheckpoint, class_names, find_pretrained, get_pretrained, list_pretrained
from .download import download_hf, download_url, file_sha256, hf_weights_path
from .resolve import resolve_source
from .uri import MIRRORS, HubRepo, fetch_url, is_uri, parse_uri, resolve_uri

__all__ = ["cache_dir", "offline", "url_cache_path", "download_url", "download_hf", "file_sha256",
           "hf_weights_path", "MIRRORS", "HubRepo", "fetch_url", "is_uri", "parse_uri", "resolve_uri",
           "CATALOG", "PretrainedCheckpoint", "class_names", "find_pretrained", "get_pretrained", "list_pretrained",
           "resolve_source"]
