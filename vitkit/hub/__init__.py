"""Published weights by name or URI: the catalog (`catalog.py`) and how a source becomes a local file
(`resolve.py`)."""

from .catalog import CATALOG, PretrainedCheckpoint, class_names, find_pretrained, get_pretrained, list_pretrained
from .resolve import resolve_source

__all__ = ["CATALOG", "PretrainedCheckpoint", "class_names", "find_pretrained", "get_pretrained", "list_pretrained",
           "resolve_source"]
