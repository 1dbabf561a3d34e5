"""Experiment logging beside metrics.jsonl: metrics.csv always, TensorBoard event files with --log tensorboard (read
back with TensorBoard's own reader), and a one-line error for a logger that is not installed or not known."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys

import pytest

from vitkit.cli import main
from vitkit.training import run_folder

FLAGS = ["--data", "digits", "--model", "ViT-Ti/4", "--image-size", "8", "--patch-size", "4", "--width", "32",
         "--depth", "1", "--num-heads", "2", "--mlp-dim", "64", "--batch-size", "16", "--warmup-steps", "1",
         "--limit-per-class", "8", "--val-per-class", "2", "--val-split", "holdout", "--progress", "false",
         "--num-workers", "0", "--log-every", "1", "--eval-every", "2"]


def test_csv_and_tensorboard_hold_the_jsonl_records(tmp_path):
    assert main(["train", *FLAGS, "--steps", "5", "--stop-after", "3", "--checkpoint-every", "2", "--log",
                 "tensorboard", "--out-dir", tmp_path, "--name", "tb"]) == 0
    run = tmp_path / "tb"
    assert main(["train", "--resume", run, "--progress", "false"]) == 0  # resumed from step 2: steps 3.. again
    records = [json.loads(line) for line in (run / run_folder.METRICS).read_text().splitlines()]
    rows = list(csv.DictReader((run / run_folder.METRICS_CSV).open()))
    wanted = [r for r in records if r["kind"] in ("train", "eval")]
    assert [(r["kind"], int(r["step"]), float(r["loss"])) for r in rows] == \
        [(r["kind"], r["step"], r["loss"]) for r in wanted]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / run_folder.TENSORBOARD))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2, 3, 4, 5]  # the resumed steps once: purged, then written again
    assert [e.value for e in losses] == pytest.approx([r["loss"] for r in records if r["kind"] == "train"])
    evals = [r for r in records if r["kind"] == "eval"]
    assert [e.step for e in events.Scalars("hold-out/top1")] == [r["step"] for r in evals] == [2, 3, 4, 5]


def test_unknown_or_missing_loggers_are_one_line_errors(tmp_path, capsys, monkeypatch):
    assert main(["train", *FLAGS, "--steps", "1", "--log", "mlflow", "--out-dir", tmp_path]) == 2
    assert "log='mlflow': mlflow is not one of tensorboard, wandb" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: `import wandb` raises ImportError
    assert main(["train", *FLAGS, "--steps", "1", "--log", "wandb", "--out-dir", tmp_path, "--name", "w"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "vitkit: error: --log wandb needs the wandb package (pip install wandb)"


def wandb_records(path) -> list:
    """The protobuf records of an offline W&B run file (run-ID.wandb): a 7-byte header (":W&B", magic, version),
    then LevelDB's log format: 32 KiB blocks of chunks, each crc32c(4) length(2, little-endian) type(1) data, type
    1 a whole record, 2/3/4 its first/middle/last parts. wandb itself no longer ships a Python reader."""
    import struct

    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B", f"{path}: not a W&B run file"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(raw):
        left = block - pos % block
        length, kind = struct.unpack("<HB", raw[pos + 4:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # the block's zero padding
            pos += left
            continue
        pending = (b"" if kind in (1, 2) else pending) + raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_wandb_offline_run_holds_the_logged_metrics(tmp_path, monkeypatch):
    """--log wandb with WANDB_MODE=offline: the run's own W&B file holds each step's training loss and each
    evaluation's top-1, at the steps of metrics.jsonl."""
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb is not installed (pip install wandb, or the dev extra)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert main(["train", *FLAGS, "--steps", "3", "--log", "wandb", "--out-dir", tmp_path, "--name", "wb"]) == 0
    run = tmp_path / "wb"
    files = sorted(run.glob("wandb/offline-run-*/run-wb.wandb"))
    assert len(files) == 1, sorted(p.name for p in run.glob("wandb/*"))
    history = {}
    for record in wandb_records(files[0]):
        if record.WhichOneof("record_type") == "history":
            values = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in
                      record.history.item}
            history[values["_step"]] = values
    records = [json.loads(line) for line in (run / run_folder.METRICS).read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert sorted(history) == [r["step"] for r in train] == [1, 2, 3]
    assert [history[r["step"]]["train/loss"] for r in train] == pytest.approx([r["loss"] for r in train])
    assert [history[r["step"]]["train/lr"] for r in train] == pytest.approx([r["lr"] for r in train])
    assert [history[r["step"]]["hold-out/top1"] for r in evals] == pytest.approx([r["top1"] for r in evals])
    assert [r["step"] for r in evals] == [2, 3]
