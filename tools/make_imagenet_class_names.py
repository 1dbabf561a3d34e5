"""Writes vitkit/hub/data/imagenet-1k.txt and imagenet-21k.txt from the synset lists timm installs.

Each line is `WNID<TAB>NAME`, in the order of the classifier outputs of the published checkpoints: the 1,000
ImageNet-1k synsets sorted by WordNet id (the order of torchvision's, timm's and the original release's heads), and
the 21,843 synsets of Google's ImageNet-21k ("fall 2011" plus two), also sorted by WordNet id, which is the list timm
uses to name the outputs of the Google in21k heads (timm.data.ImageNetInfo picks it for 21,843 classes). NAME is
the WordNet lemma list ("tench, Tinca tinca"), as Hugging Face's id2label gives it.

    python tools/make_imagenet_class_names.py       # needs timm installed
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "vitkit" / "hub" / "data"
SETS = {"imagenet-1k.txt": ("imagenet_synsets.txt", 1000), "imagenet-21k.txt": ("imagenet21k_goog_synsets.txt", 21843)}


def main() -> int:
    import timm.data

    info = Path(timm.data.__file__).parent / "_info"
    lemmas = dict(line.split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines()
                  if "\t" in line)
    for out_name, (synset_file, count) in SETS.items():
        synsets = (info / synset_file).read_text().split()
        if len(synsets) != count or synsets != sorted(synsets) or len(set(synsets)) != count:
            print(f"{synset_file}: expected {count} distinct sorted synsets, found {len(synsets)}", file=sys.stderr)
            return 1
        missing = [s for s in synsets if s not in lemmas]
        if missing:
            print(f"{synset_file}: {len(missing)} synsets without a lemma (first {missing[0]})", file=sys.stderr)
            return 1
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / out_name).write_text("".join(f"{s}\t{lemmas[s].strip()}\n" for s in synsets))
        print(f"wrote {OUT / out_name} ({count} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
