"""WebDataset shards: `vitkit data pack` writes them atomically with an index; the stream reads them from a folder,
a brace pattern, pipe: or http:// (a real server), in an order that depends on (seed, position) only: the same for
1 or 2 ranks and any number of loader processes, and the same after a restart from a position."""

from __future__ import annotations

import functools
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.cli import main as cli
from vitkit.data.shards import (INDEX_FILE, ShardBatches, ShardStream, is_shard_spec, iterate_shard, open_shards,
                                pack_shards, shard_eval_loader)
from vitkit.errors import UsageError

quiet = lambda message: None  # noqa: E731


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A transform with randomness in it, so that the seeding per position shows."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255  # (3, H, W)
    return x + 0.01 * torch.rand(())


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pack") / "digits-shards"
    pack_shards("digits", out, shard_size=20, limit_per_class=12, log=quiet)  # 120 train images -> 6 shards
    return out


def stream_items(shards, start=0, count=40, rank=0, world_size=1, workers=0, streams=4, buffer=7, seed=3):
    stream = ShardStream(shards, to_tensor, streams=streams, buffer=buffer, seed=seed, rank=rank,
                         world_size=world_size, start=start, stop=start + count * world_size, chunk=5)
    return [(x, label) for x, label in stream.samples(workers)]


def test_pack_writes_shards_and_an_index(packed):
    index = json.loads((packed / INDEX_FILE).read_text())
    assert index["classes"] == [str(c) for c in range(10)]
    assert index["train"]["samples"] == 120 and len(index["train"]["shards"]) == 6
    assert index["train"]["pattern"] == "shard-{000000..000005}.tar"
    assert index["val"]["split"] == "test" and index["val"]["samples"] == 359  # digits' own test split
    assert sum(sum(s["class_counts"]) for s in index["train"]["shards"]) == 120
    first = index["train"]["shards"][0]
    assert first["bytes"] == (packed / first["name"]).stat().st_size
    samples = list(iterate_shard(str(packed / "shard-000000.tar")))
    assert len(samples) == 20 and set(samples[0]) >= {"png", "cls", "__key__"}
    assert len({int(s["cls"]) for s in samples}) > 3  # shuffled at packing: classes mixed in each shard
    assert not [p for p in packed.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_pack_refuses_an_existing_folder_and_leaves_nothing_when_stopped(tmp_path, packed):
    with pytest.raises(UsageError, match="already exists"):
        pack_shards("digits", packed, shard_size=20, log=quiet)

    def stop(message):
        if message.startswith("wrote"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        pack_shards("digits", tmp_path / "out", shard_size=50, limit_per_class=10, log=stop)
    assert list(tmp_path.iterdir()) == []


def test_pack_command(tmp_path, capsys):
    folder = tmp_path / "tree"
    for c, colour in enumerate(["red", "green", "blue"]):
        (folder / colour).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (6, 6), (40 * i, 80 * c, 10)).save(folder / colour / f"{i}.jpg")
    (folder / "blue" / "broken.jpg").write_bytes(b"not a jpeg")
    code = cli(["data", "pack", str(folder), "-o", str(tmp_path / "out"), "--shard-size", "4", "--val-fraction", "0.2",
                "--max-bad-fraction", "0.1"])
    assert code == 0
    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    assert index["classes"] == ["blue", "green", "red"]
    assert index["train"]["samples"] + index["val"]["samples"] == 15
    assert index["bad_files"][0][0].endswith("broken.jpg")
    sample = next(iterate_shard(str(tmp_path / "out" / "shard-000000.tar")))
    assert "jpg" in sample  # a JPEG's own bytes, not re-encoded
    assert "shard-{000000..000002}.tar" in capsys.readouterr().out


@pytest.mark.parametrize("spec", ["folder", "pattern", "pipe"])
def test_the_same_shards_by_folder_pattern_and_pipe(packed, spec):
    value = {"folder": str(packed), "pattern": str(packed / "shard-{000000..000005}.tar"),
             "pipe": f"pipe:cat {packed}/shard-{{000000..000005}}.tar"}[spec]
    if spec != "pipe":
        assert is_shard_spec(value)
    shards = open_shards(value, log=quiet)
    assert shards.samples == 120 and shards.counts == [20] * 6
    if spec == "pipe":  # no index can be found beside a command: counted by reading, classes by number
        assert shards.val is None
    else:
        assert shards.val.samples == 359
    reference = stream_items(open_shards(str(packed), log=quiet))
    for (a, la), (b, lb) in zip(stream_items(shards), reference):
        assert la == lb and torch.equal(a, b)


def test_http_pattern_through_a_real_server(packed):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(packed))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/shard-{{000000..000005}}.tar"
        shards = open_shards(url, log=quiet)  # index.json fetched from the server
        assert shards.counts == [20] * 6 and shards.classes[0] == "0" and shards.val.samples == 359
        got = stream_items(shards, workers=2)
    finally:
        server.shutdown()
    reference = stream_items(open_shards(str(packed), log=quiet))
    assert [label for _, label in got] == [label for _, label in reference]


def test_order_covers_every_sample_once_per_epoch(packed):
    shards = open_shards(str(packed), log=quiet)
    stream = ShardStream(shards, lambda image: image, streams=3, buffer=7, seed=0, stop=120)
    keys = list(stream.samples())
    assert len(keys) == 120
    labels = sorted(label for _, label in keys)
    expected = sorted(int(s["cls"]) for url in shards.urls for s in iterate_shard(url))
    assert labels == expected
    second = ShardStream(shards, lambda image: image, streams=3, buffer=7, seed=1, stop=120)
    assert [label for _, label in second.samples()] != [label for _, label in keys]  # another seed, another order


def test_ranks_and_workers_split_one_global_order(packed):
    shards = open_shards(str(packed), log=quiet)
    one = stream_items(shards, count=48)
    two = [stream_items(shards, count=24, rank=r, world_size=2, workers=w) for r, w in ((0, 2), (1, 0))]
    for i, (x, label) in enumerate(one):  # global position p is rank p % 2's (p // 2)-th sample
        y, other = two[i % 2][i // 2]
        assert label == other and torch.equal(x, y)


def test_a_restart_from_a_position_continues_the_same_order(packed):
    shards = open_shards(str(packed), log=quiet)
    whole = stream_items(shards, count=300)  # two and a half epochs
    for start in (0, 5, 33, 121, 250):
        tail = stream_items(shards, start=start, count=300 - start, workers=2 if start == 121 else 0)
        assert [label for _, label in tail] == [label for _, label in whole[start:]]
        assert all(torch.equal(a, b) for (a, _), (b, _) in zip(tail, whole[start:]))


def rewrite_shard(path: Path, change) -> None:
    """Rewrite a tar shard with `change(name, data)` -> data (or None to drop the member)."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            data = change(name, data)
            if data is None:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_broken_samples_leave_their_slot_empty_and_are_counted(tmp_path, packed):
    import shutil

    copy = tmp_path / "shards"
    shutil.copytree(packed, copy)
    first = sorted(s["__key__"] for s in iterate_shard(str(copy / "shard-000002.tar")))[0]
    rewrite_shard(copy / "shard-000002.tar", lambda name, data: b"garbage" if name == f"{first}.png" else data)
    tail = sorted(s["__key__"] for s in iterate_shard(str(copy / "shard-000004.tar")))[-5:]
    rewrite_shard(copy / "shard-000004.tar", lambda name, data: None if name.split(".")[0] in tail else data)
    shards = open_shards(str(copy), log=quiet)  # the index still counts 20 in shard 4: its tail is missing
    good = open_shards(str(packed), log=quiet)
    messages = []
    stream = ShardStream(shards, to_tensor, streams=2, buffer=7, seed=0, stop=120)
    batches = ShardBatches(stream, per_rank=10, max_bad_fraction=0.5, log=messages.append)
    got = list(batches)
    reference = list(ShardBatches(ShardStream(good, to_tensor, streams=2, buffer=7, seed=0, stop=120), 10))
    assert len(got) == len(reference) == 12
    assert 2 <= len(batches.broken) <= 11 and len(messages) == len(batches.broken)
    assert sum(len(b[1]) for b in got) == 120 - len(batches.broken)
    assert any("garbage" in r or "not a readable" in r or "cannot identify" in r for _, r in batches.broken)
    same = [i for i, (a, b) in enumerate(zip(got, reference)) if len(a[1]) == 10]
    assert same and all(torch.equal(got[i][0], reference[i][0]) for i in same)  # the order elsewhere unchanged

    strict = ShardBatches(ShardStream(shards, to_tensor, streams=2, buffer=7, seed=0, stop=120), 10,
                          max_bad_fraction=0.01, log=quiet)
    with pytest.raises(UsageError, match="broken, more than the limit"):
        list(strict)


def test_evaluation_reads_every_sample_once_over_ranks_and_workers(packed):
    shards = open_shards(str(packed), log=quiet).val
    labels = []
    for rank, workers in ((0, 2), (1, 0)):
        for x, y in shard_eval_loader(shards, to_tensor, 16, workers, rank, 2):
            labels.extend(y.tolist())
    assert sorted(labels) == sorted(int(s["cls"]) for url in shards.urls for s in iterate_shard(url))


def test_missing_shards_and_foreign_indexes_are_named(tmp_path, packed):
    with pytest.raises(UsageError, match=r"2 of 8 shard\(s\) do not exist"):
        open_shards(str(packed / "shard-{000000..000007}.tar"), log=quiet)
    (tmp_path / INDEX_FILE).write_text('{"format": "other"}')
    (tmp_path / "a.tar").write_bytes((packed / "shard-000000.tar").read_bytes())
    with pytest.raises(UsageError, match="not a vitkit shard index"):
        open_shards(str(tmp_path / "a.tar"), log=quiet)
