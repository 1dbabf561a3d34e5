"""WebDataset tar shards: written by `vitkit data pack`, streamed by training with an exact position to resume from.

    pack_shards("digits", "out/digits-shards", shard_size=500)   # out/.../shard-000000.tar ..., val-*.tar, index.json
    shards = open_shards("out/digits-shards/shard-{000000..000002}.tar")   # or the folder, or http(s)://, pipe:

A sample is `<key>.png` (or .jpg, the original bytes of a JPEG file) and `<key>.cls` (the class index as text), the
layout of timm's `imagenet-22k-wds` sets. `index.json` beside the shards names the classes and counts each shard's
samples and bytes; it is what lets a run find its place again without reading what came before.

The order is a function of (seed, position), whatever the number of processes, as in `vitkit.data.loader`. The
stream is cut into `streams` lanes (a fixed number, part of the config, not the world size): in epoch e the shards
are put in an order seeded by (seed, e) and dealt out to the lanes, and each lane is shuffled in chunks of
`shuffle_buffer` samples (a buffer filled, permuted with a seed of (seed, e, lane, chunk), and emptied). Global
position p is the (p // streams)-th sample of lane p % streams. Rank r of W takes the positions p = r (mod W), so
the lanes r, r + W, ... (and reads no other lane when W divides `streams`); its loader processes take turns. A run
resumed at step s starts at position s x global batch: whole shards are skipped by their counts in the index, and
only the one chunk the run stopped in is read again.

A sample whose image cannot be decoded (or that lacks its image or class, or is missing from a short shard) leaves
its slot empty: that step's batch on that rank is one image smaller, the sample is counted and listed, and the
order of everything after it is unchanged.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import UsageError
from .datasets import ImageSet, read_image
from .loader import mix_seed

INDEX_FILE = "index.json"
INDEX_FORMAT = "vitkit-shards"
TRAIN_PREFIX = "shard"
VAL_PREFIX = "val"
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp")  # the image entry of a sample, first found wins
URL_SCHEMES = ("pipe:", "http://", "https://", "file:")


# ------------------------------------------------------------------------------------------------- writing
def _image_bytes(images: ImageSet, index: int) -> tuple[str, bytes]:
    """(extension, bytes): a JPEG or PNG file's own bytes (already checked when the folder was scanned), any
    other image re-encoded as PNG (lossless)."""
    if images.paths is not None:
        path = images.paths[index]
        suffix = os.path.splitext(path)[1].lower()
        if suffix in (".jpg", ".jpeg", ".png"):
            with open(path, "rb") as f:
                return ("png" if suffix == ".png" else "jpg"), f.read()
    buffer = io.BytesIO()
    images.load(index).save(buffer, format="PNG")
    return "png", buffer.getvalue()


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def _write_split(images: ImageSet, folder: Path, prefix: str, shard_size: int, seed: int,
                 log: Callable[[str], None]) -> dict:
    import webdataset as wds

    order = np.random.default_rng(mix_seed(seed, 0xFAC)).permutation(len(images))  # classes mixed in every shard
    shards = []
    for first in range(0, len(order), shard_size):
        name = shard_name(prefix, len(shards))
        members = order[first:first + shard_size]
        counts = np.zeros(len(images.classes), np.int64)
        with open(folder / name, "wb") as stream:
            writer = wds.TarWriter(stream, encoder=False, mtime=0.0)  # fixed times: the same input, the same bytes
            for position, index in enumerate(members):
                ext, data = _image_bytes(images, int(index))
                label = int(images.labels[index])
                counts[label] += 1
                writer.write({"__key__": f"{first + position:09d}", ext: data, "cls": str(label).encode()})
            writer.close()
        shards.append({"name": name, "samples": len(members), "bytes": (folder / name).stat().st_size,
                       "class_counts": counts.tolist()})
    total = sum(s["bytes"] for s in shards)
    log(f"wrote {len(images):,} {prefix} samples in {len(shards)} shard(s) ({total / 1e6:.1f} MB)")
    return {"samples": len(images), "bytes": total, "pattern": _brace_pattern(prefix, len(shards)),
            "shards": shards}


def _brace_pattern(prefix: str, count: int) -> str:
    if count == 1:
        return shard_name(prefix, 0)
    return f"{prefix}-{{{0:06d}..{count - 1:06d}}}.tar"


def pack_shards(src: str, out: str | os.PathLike, shard_size: int = 1000, *, seed: int = 0,
                val_split: str = "auto", val_fraction: float = 0.1, split_seed: int = 0,
                max_bad_fraction: float = 0.01, limit_per_class: int | None = None,
                log: Callable[[str], None] = print) -> dict:
    """Write the training split of `src` (what `open_data` reads: digits, an ImageFolder tree, a CIFAR folder) as
    `OUT/shard-NNNNNN.tar` and its evaluation split as `OUT/val-NNNNNN.tar`, with `OUT/index.json`.

    The samples are shuffled once (seeded) so that every shard holds every class. OUT appears whole or not at
    all: the shards are written into a temporary folder beside it, which is renamed to OUT at the end. Returns
    the index.
    """
    from .sources import open_data

    if shard_size < 1:
        raise UsageError(f"--shard-size {shard_size}: must be at least 1")
    out = Path(out)
    if out.exists():
        raise UsageError(f"{out}: already exists; pack into a new folder (or remove it first)")
    splits = open_data(src, min_classes=2, val_split=val_split, val_fraction=val_fraction, split_seed=split_seed,
                       max_bad_fraction=max_bad_fraction, limit_per_class=limit_per_class, log=log)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        index: dict[str, Any] = {"format": INDEX_FORMAT, "version": 1, "classes": list(splits.classes),
                                 "source": splits.description, "shard_size": shard_size, "seed": seed}
        index["train"] = _write_split(splits.train, tmp, TRAIN_PREFIX, shard_size, seed, log)
        if splits.val is not None:
            index["val"] = {**_write_split(splits.val, tmp, VAL_PREFIX, shard_size, seed, log),
                            "split": splits.val_name}
        if splits.bad_files:
            index["bad_files"] = [[p, r] for p, r in splits.bad_files]
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
        for path in tmp.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o777 & ~_umask())
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    from ..files import fsync_dir

    fsync_dir(out.parent)
    return index


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------------------- reading
@dataclass
class ShardSet:
    """Shards of one split: their URLs (paths, http(s)://, pipe:) and sample counts, and the class names."""

    urls: list[str]
    counts: list[int]
    classes: list[str]
    description: str
    val: "ShardSet | None" = None
    val_name: str = "val"
    in_memory = False  # (as ImageSet's: streamed, decoded in the loader processes)

    @property
    def samples(self) -> int:
        return sum(self.counts)

    def __len__(self) -> int:
        return self.samples


def is_url(spec: str) -> bool:
    return spec.startswith(URL_SCHEMES)


def is_shard_spec(data: str) -> bool:
    """Whether a --data value names shards: a .tar file or pattern, a URL, or a folder with a shard index (or
    only .tar files)."""
    if is_url(data) or data.endswith(".tar") or (".tar" in data and "{" in data):
        return True
    path = Path(data).expanduser()
    if path.is_dir():
        if (path / INDEX_FILE).is_file():
            return _is_index(path / INDEX_FILE)
        entries = [p for p in path.iterdir() if not p.name.startswith(".")]
        return bool(entries) and all(p.is_file() and p.suffix == ".tar" for p in entries)
    return False


def _is_index(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == INDEX_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def expand_pattern(pattern: str) -> list[str]:
    """A brace pattern ('shard-{000000..000009}.tar', also inside URLs) as its list of names, by webdataset's
    rules."""
    from webdataset.shardlists import expand_urls

    return list(expand_urls(pattern))


def _parent(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def _read_url(url: str) -> bytes:
    import webdataset as wds

    with wds.gopen(url) as f:
        return f.read()


def _load_index(base: str, log: Callable[[str], None]) -> dict | None:
    """The index.json in folder or URL `base`, or None where there is none."""
    if is_url(base) and not base.startswith("file:"):
        if base.startswith("pipe:"):
            return None
        try:
            text = _read_url(f"{base}/{INDEX_FILE}")
        except Exception:
            return None
        if not text:
            return None
        where = f"{base}/{INDEX_FILE}"
    else:
        path = Path(base.removeprefix("file://").removeprefix("file:")) / INDEX_FILE
        if not path.is_file():
            return None
        text, where = path.read_bytes(), str(path)
    try:
        index = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{where}: not a JSON shard index ({e})") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise UsageError(f"{where}: not a vitkit shard index (its 'format' is not {INDEX_FORMAT!r})")
    return index


def _from_index(urls: list[str], index: dict, split: str, where: str) -> list[int]:
    """The sample count of each URL by the index's entries for `split` (matched by file name)."""
    entries = {s["name"]: s for s in index.get(split, {}).get("shards", [])}
    counts = []
    for url in urls:
        name = url.rstrip("/").rsplit("/", 1)[-1]
        if name not in entries:
            raise UsageError(f"{where}: {name} is not in its {split!r} shards ({len(entries)} listed); pack again "
                             "or name the shards the index lists")
        counts.append(int(entries[name]["samples"]))
    return counts


def count_samples(url: str) -> tuple[int, int]:
    """(samples, largest class index + 1) of one shard, by reading it."""
    samples, classes = 0, 0
    for sample in iterate_shard(url):
        samples += 1
        try:
            classes = max(classes, int(sample.get("cls", b"-1")) + 1)
        except ValueError:
            pass
    return samples, classes


def open_shards(spec: str, *, log: Callable[[str], None] = print) -> ShardSet:
    """The shards that `spec` names, with their counts (from index.json beside them, else by reading each once,
    announced) and the evaluation shards the index lists."""
    spec = str(spec)
    local_folder = not is_url(spec) and Path(spec).expanduser().is_dir()
    if local_folder:
        folder = Path(spec).expanduser()
        index = _load_index(str(folder), log)
        if index is not None:
            urls = [str(folder / s["name"]) for s in index["train"]["shards"]]
        else:
            urls = sorted(str(p) for p in folder.glob("*.tar"))
            if not urls:
                raise UsageError(f"--data {spec}: no .tar shards in the folder")
        base = str(folder)
    else:
        urls = expand_pattern(spec)
        base = _parent(urls[0])
        if any(_parent(u) != base for u in urls):
            raise UsageError(f"--data {spec}: the shards are in more than one folder; give one pattern per folder")
        if not is_url(spec):
            missing = [u for u in urls if not Path(u).is_file()]
            if missing:
                raise UsageError(f"--data {spec}: {len(missing)} of {len(urls)} shard(s) do not exist "
                                 f"(first: {missing[0]})")
        index = _load_index(base, log)
    where = f"{base}/{INDEX_FILE}"
    val = None
    if index is not None:
        counts = _from_index(urls, index, "train", where)
        classes = [str(c) for c in index["classes"]]
        if "val" in index:
            val_urls = [f"{base}/{s['name']}" for s in index["val"]["shards"]]
            val = ShardSet(val_urls, [int(s["samples"]) for s in index["val"]["shards"]], classes,
                           f"{index['val'].get('split', 'val')} shards in {base}")
    else:
        log(f"no {INDEX_FILE} beside {spec}: counting the samples of {len(urls)} shard(s) by reading them once "
            "(vitkit data pack writes one)")
        found = [count_samples(u) for u in urls]
        counts = [n for n, _ in found]
        num_classes = max(k for _, k in found)
        classes = [str(c) for c in range(num_classes)]
        log(f"the shards name no classes: called 0..{num_classes - 1} by their .cls values")
    if sum(counts) == 0:
        raise UsageError(f"--data {spec}: the shards hold no samples")
    shards = ShardSet(urls, counts, classes, f"{len(urls)} shard(s) {spec} ({sum(counts):,} samples)", val=val)
    if val is not None:
        shards.val_name = index["val"].get("split", "val")
    return shards


def iterate_shard(url: str) -> Iterator[dict]:
    """The samples of one tar shard as dicts of {extension: bytes} (and __key__), by webdataset's tar reader;
    raises where the shard cannot be opened or is cut short."""
    import webdataset as wds
    from webdataset.tariterators import group_by_keys, tar_file_expander

    stream = wds.gopen(url)
    try:
        yield from group_by_keys(tar_file_expander([{"url": url, "stream": stream}]))
    finally:
        stream.close()


# --------------------------------------------------------------------------------------------- the order
def lane_shards(num_shards: int, streams: int, seed: int, epoch: int, lane: int) -> list[int]:
    """The shards lane `lane` reads in `epoch`, in order."""
    order = np.random.default_rng(mix_seed(seed, epoch, 0x54A2D)).permutation(num_shards)
    return [int(i) for i in order[lane::streams]]


def chunk_order(size: int, seed: int, epoch: int, lane: int, chunk: int) -> np.ndarray:
    """The permutation of one shuffle-buffer fill."""
    return np.random.default_rng(mix_seed(seed, epoch, lane, chunk, 0xB0F)).permutation(size)


class LaneReader:
    """One lane's raw samples, by lane position (increasing), over epochs without end. Holds one chunk of
    `buffer` samples and one open shard; skips whole shards by their counts."""

    def __init__(self, shards: ShardSet, streams: int, lane: int, seed: int, buffer: int):
        self.shards, self.streams, self.lane, self.seed, self.buffer = shards, streams, lane, seed, buffer
        self.epoch, self.epoch_start, self.epoch_shards, self.epoch_size = -1, 0, [], 0
        self.chunk_start, self.chunk = None, []
        self.reading = None  # (epoch, shard slot, next sample in that shard, iterator)

    def _enter_epoch(self, epoch: int, start: int) -> None:
        self.epoch, self.epoch_start = epoch, start
        self.epoch_shards = lane_shards(len(self.shards.urls), self.streams, self.seed, epoch, self.lane)
        self.epoch_size = sum(self.shards.counts[i] for i in self.epoch_shards)

    def get(self, position: int) -> dict:
        if self.epoch < 0 or position < self.epoch_start:
            self._enter_epoch(0, 0)
        while position >= self.epoch_start + self.epoch_size:
            self._enter_epoch(self.epoch + 1, self.epoch_start + self.epoch_size)
        offset = position - self.epoch_start
        chunk = offset // self.buffer
        start = self.epoch_start + chunk * self.buffer
        if self.chunk_start != start:
            size = min(self.buffer, self.epoch_size - chunk * self.buffer)
            raw = self._read(chunk * self.buffer, size)
            self.chunk = [raw[i] for i in chunk_order(size, self.seed, self.epoch, self.lane, chunk)]
            self.chunk_start = start
        return self.chunk[position - start]

    def _read(self, offset: int, size: int) -> list[dict]:
        """Samples offset .. offset + size of this lane's epoch, in file order; gaps (a shard cut short or not
        readable) are filled with {"__error__": reason}."""
        out: list[dict] = []
        slot, first = 0, offset
        while first >= self.shards.counts[self.epoch_shards[slot]]:
            first -= self.shards.counts[self.epoch_shards[slot]]
            slot += 1
        while len(out) < size:
            shard = self.epoch_shards[slot]
            count = self.shards.counts[shard]
            url = self.shards.urls[shard]
            if not (self.reading and self.reading[:3] == (self.epoch, slot, first)):
                self.reading = (self.epoch, slot, 0, iterate_shard(url))
                for _ in range(first):
                    self._next(url)
            take = min(count - first, size - len(out))
            for _ in range(take):
                out.append(self._next(url))
            first += take
            if first >= count:
                slot, first = slot + 1, 0
                self.reading = None
        return out

    def _next(self, url: str) -> dict:
        epoch, slot, at, iterator = self.reading
        self.reading = (epoch, slot, at + 1, iterator)
        if iterator is None:
            return {"__error__": self._dead, "__url__": url}
        try:
            sample = next(iterator)
        except StopIteration:
            sample = None
            reason = f"the shard ends after {at} samples, its index says {self.shards.counts[self.epoch_shards[slot]]}"
        except Exception as e:  # a shard that cannot be opened, a tar cut short
            sample = None
            reason = f"unreadable shard ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
        if sample is None:
            self._dead = reason
            self.reading = (epoch, slot, at + 1, None)
            return {"__error__": reason, "__url__": url}
        return sample


def decode_sample(sample: dict) -> tuple[Image.Image, int]:
    """(RGB image, class index) of one raw sample, by the rules of `read_image`; raises ValueError/OSError."""
    if "__error__" in sample:
        raise ValueError(sample["__error__"])
    image_key = next((k for k in IMAGE_KEYS if k in sample), None)
    if image_key is None:
        raise ValueError(f"no image entry (expected one of .{', .'.join(IMAGE_KEYS)})")
    if "cls" not in sample:
        raise ValueError("no .cls entry")
    try:
        label = int(sample["cls"].decode().strip())
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f".cls is not an integer: {sample['cls'][:20]!r}") from None
    try:
        return read_image(io.BytesIO(sample[image_key])), label
    except Exception as e:  # OSError, ValueError, DecompressionBombError, ... as read_image raises them
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        text = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", f"the .{image_key} entry", text)
        raise ValueError(f"not a readable image ({type(e).__name__}: {text})") from None


def sample_name(sample: dict) -> str:
    return f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"


@dataclass
class Broken:
    """An empty slot in the stream: where and why."""

    where: str
    reason: str


class ShardStream(torch.utils.data.IterableDataset):
    """One rank's training samples, (image tensor, label) or `Broken`, in its order from global position
    `start`. Under a DataLoader its K processes take turns: process k decodes the rank's samples k, k + K, ... and
    hands them over `chunk` at a time, stacked into one tensor (one message per chunk, not per image);
    `samples(...)` puts them back in order."""

    def __init__(self, shards: ShardSet, transform: Callable, *, streams: int, buffer: int, seed: int,
                 rank: int = 0, world_size: int = 1, start: int = 0, stop: int | None = None,
                 label_map: np.ndarray | None = None, chunk: int = 32):
        if start % world_size:
            raise ValueError(f"start position {start} is not a multiple of the world size {world_size}")
        self.shards, self.transform, self.streams, self.buffer, self.seed = shards, transform, streams, buffer, seed
        self.rank, self.world_size, self.start, self.stop = rank, world_size, start, stop
        self.label_map, self.chunk = label_map, chunk
        self.num_classes = len(shards.classes)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        lanes: dict[int, LaneReader] = {}
        q = self.start // self.world_size + worker  # this rank's q-th sample is global position q*W + rank
        items = []
        while True:
            position = q * self.world_size + self.rank
            if self.stop is not None and position >= self.stop:
                break
            lane = position % self.streams
            reader = lanes.get(lane)
            if reader is None:
                reader = lanes[lane] = LaneReader(self.shards, self.streams, lane, self.seed, self.buffer)
            items.append(self._decode(reader.get(position // self.streams), position))
            q += workers
            if len(items) == self.chunk:
                yield _pack_chunk(items)
                items = []
        if items:
            yield _pack_chunk(items)

    def samples(self, num_workers: int = 0, pin_memory: bool = False) -> Iterator:
        """The rank's samples in order, decoded by `num_workers` loader processes (0: in this process)."""
        loader = torch.utils.data.DataLoader(self, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                                             prefetch_factor=4 if num_workers else None, collate_fn=_as_is)
        chunks = iter(loader)
        turns = max(num_workers, 1)
        while True:
            round_ = []
            for _ in range(turns):  # one chunk from each process, in the order they take turns
                chunk = next(chunks, None)
                if chunk is None:
                    break
                round_.append(_unpack_chunk(chunk))
            if not round_:
                return
            for i in range(max(len(c) for c in round_)):  # process k's i-th sample precedes process k+1's
                for chunk in round_:
                    if i < len(chunk):
                        yield chunk[i]
            if len(round_) < turns:
                return

    def _decode(self, sample: dict, position: int):
        try:
            image, label = decode_sample(sample)
            if not 0 <= label < self.num_classes:
                raise ValueError(f"class {label} outside 0..{self.num_classes - 1}")
        except Exception as e:  # OSError, ValueError, DecompressionBombError, ... as read_image raises them
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return Broken(sample_name(sample), reason)
        generator = torch.default_generator  # the augmentation of position p, whichever process draws it
        saved = generator.get_state()
        generator.manual_seed(mix_seed(self.seed, position, 0xA46))
        try:
            x = self.transform(image)
        finally:
            generator.set_state(saved)
        if self.label_map is not None:
            label = int(self.label_map[label])
        return x, label


def _as_is(item):
    return item  # chunks pass through the DataLoader uncollated (batch_size=None)


def _pack_chunk(items: list) -> dict:
    """Decoded samples as one message: the tensors stacked when they share a shape, the broken ones apart."""
    good = [item for item in items if not isinstance(item, Broken)]
    tensors = [x for x, _ in good]
    stacked = all(torch.is_tensor(t) for t in tensors) and len({tuple(t.shape) for t in tensors}) == 1
    return {"images": torch.stack(tensors) if stacked else tensors, "labels": [label for _, label in good],
            "slots": [item if isinstance(item, Broken) else None for item in items]}


def _unpack_chunk(chunk: dict) -> list:
    images, labels, out, g = chunk["images"], chunk["labels"], [], 0
    for slot in chunk["slots"]:
        if slot is None:
            out.append((images[g], labels[g]))
            g += 1
        else:
            out.append(slot)
    return out


class ShardBatches:
    """Micro-batches for one rank from a `ShardStream`: `per_rank` slots each, empty slots dropped and counted
    in `broken` (where, reason); stops with a UsageError when more than `max_bad_fraction` of the samples read
    so far are broken (checked once at least 1 / max_bad_fraction samples were read)."""

    def __init__(self, stream: ShardStream, per_rank: int, num_workers: int = 0, pin_memory: bool = False,
                 max_bad_fraction: float = 0.01, log: Callable[[str], None] = print):
        self.stream, self.num_workers, self.pin_memory = stream, num_workers, pin_memory
        self.per_rank, self.max_bad_fraction, self.log = per_rank, max_bad_fraction, log
        self.broken: list[tuple[str, str]] = []
        self.seen = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        items = self.stream.samples(self.num_workers, self.pin_memory)
        while True:
            images, labels = [], []
            for _ in range(self.per_rank):
                item = next(items, None)
                if item is None:
                    return
                self.seen += 1
                if isinstance(item, Broken):
                    self.broken.append((item.where, item.reason))
                    self.log(f"skipped sample {item.where}: {item.reason}")
                if self.broken:
                    self._check()
                if isinstance(item, Broken):
                    continue
                images.append(item[0])
                labels.append(item[1])
            if not images:  # every slot of the micro-batch empty: an empty batch would divide by zero
                raise UsageError(f"all {self.per_rank} samples of a micro-batch are broken (last: "
                                 f"{self.broken[-1][0]}: {self.broken[-1][1]})")
            yield torch.stack(images), torch.as_tensor(labels, dtype=torch.int64)

    def _check(self) -> None:
        limit = self.max_bad_fraction
        if self.seen * limit >= 1 and len(self.broken) > limit * self.seen:
            where, reason = self.broken[0]
            raise UsageError(f"{len(self.broken)} of {self.seen} samples read ({100 * len(self.broken) / self.seen:.1f}%)"
                             f" are broken, more than the limit of {100 * limit:g}% (first: {where}: {reason}); "
                             "raise --max-bad-fraction or repack the shards")


class ShardEval(torch.utils.data.IterableDataset):
    """Evaluation samples, each exactly once over all ranks and loader processes (rank r reads shards r, r + W,
    ..., shared out among its processes); broken samples are left out (the evaluation's count says how many were scored)."""

    def __init__(self, shards: ShardSet, transform: Callable, rank: int = 0, world_size: int = 1,
                 label_map: np.ndarray | None = None):
        self.shards, self.transform, self.rank, self.world_size = shards, transform, rank, world_size
        self.label_map = label_map

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = self.shards.urls[self.rank::self.world_size]
        for url in mine[worker::workers]:
            try:
                for sample in iterate_shard(url):
                    sample["__url__"] = url
                    try:
                        image, label = decode_sample(sample)
                    except Exception:
                        continue
                    if self.label_map is not None:
                        label = int(self.label_map[label])
                    yield self.transform(image), label
            except Exception:  # a shard cut short: what was read counts
                continue


def shard_eval_loader(shards: ShardSet, transform: Callable, batch_size: int, num_workers: int = 0,
                      rank: int = 0, world_size: int = 1, pin_memory: bool = False):
    return torch.utils.data.DataLoader(ShardEval(shards, transform, rank, world_size), batch_size=batch_size,
                                       num_workers=num_workers, pin_memory=pin_memory)


__all__ = ["pack_shards", "open_shards", "is_shard_spec", "ShardSet", "ShardStream", "ShardBatches", "ShardEval",
           "shard_eval_loader", "iterate_shard", "expand_pattern", "LaneReader", "INDEX_FILE"]
