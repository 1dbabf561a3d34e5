"""`vitkit download NAME|URI ...`: fill the cache ahead of time (for a machine that will be offline, or a cluster
whose jobs should not all fetch at once), printing where each file went."""

from __future__ import annotations

ORDER = 12


def register(sub) -> None:
    import argparse

    p = sub.add_parser("download", help="fetch published checkpoints into the cache, by name or URI",
                       description="Download checkpoints into vitkit's cache ($VITKIT_CACHE; Hugging Face repositories "
                       "into huggingface_hub's), checking their hashes, so that later loads need no network "
                       "(VITKIT_OFFLINE=1). Names are those of vitkit models --pretrained.",
                       epilog="examples:\n  vitkit download vit-b16-in21k tv-vit-b16-in1k\n  vitkit download "
                       "hf-hub:google/vit-base-patch16-224 gs://vit_models/imagenet21k/ViT-L_16.npz",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="NAME|URI", help="catalog names or URIs (hf-hub:ORG/REPO[@REV], "
                   "https://..., gs://BUCKET/PATH)")
    p.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the file (one source only)")
    from . import _args

    _args.add_json(p, "print where each file went as JSON on stdout")
    _args.add_runtime(p, device=False, threads=False, progress=False)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import UsageError
    from ..hub.catalog import find_pretrained, suggest
    from ..hub.resolve import fetch
    from ..hub.uri import is_uri, resolve_uri

    if args.sha256 and len(args.sources) > 1:
        raise UsageError("--sha256 checks one file; give one source with it")
    for source in args.sources:  # every name is checked before anything is fetched
        if find_pretrained(source) is None and not is_uri(source):
            raise UsageError(f"{source}: not a pre-trained name or URI{suggest(source)}")
    found = {}
    for source in args.sources:
        entry = find_pretrained(source)
        path = fetch(entry, args.sha256) if entry is not None else resolve_uri(source, sha256=args.sha256)
        found[entry.name if entry else source] = str(path)
        if not args.json:
            print(f"{entry.name if entry else source}: {path}")
    if args.json:
        import json

        print(json.dumps(found, indent=2))
    return 0
