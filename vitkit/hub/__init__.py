"""Published weights by URI: downloading into vitkit's cache (plain URLs) or huggingface_hub's (repositories).

    from vitkit.hub import resolve_uri
    path = resolve_uri("gs://vit_models/imagenet21k/ViT-B_16.npz")   # cached after the first call
    model = vitkit.load(path)
"""

from .cache import cache_dir, offline, url_cache_path
from .download import download_hf, download_url, file_sha256, hf_weights_path
from .uri import MIRRORS, HubRepo, fetch_url, is_uri, parse_uri, resolve_uri

__all__ = ["cache_dir", "offline", "url_cache_path", "download_url", "download_hf", "file_sha256",
           "hf_weights_path", "MIRRORS", "HubRepo", "fetch_url", "is_uri", "parse_uri", "resolve_uri"]
