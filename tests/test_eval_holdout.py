"""Issue 19, bug 1: a run's hold-out is a fact stored with the run (holdout.json) and `vitkit eval --checkpoint RUN`
scores exactly those images, whatever the spelling of the data path and whatever eval's own --limit-per-class;
after --val-split none, eval never calls the training images a hold-out."""

from __future__ import annotations

import json
import os

import pytest

from vitkit.cli import main
from vitkit.training import run_folder
from vitkit.training.holdout import fingerprint, open_eval_set, read_split
from vitkit.training.trainer import load_run_config, train

from test_data import write_image_folder
from test_train import tiny_config


def quiet(message):
    pass


@pytest.fixture(scope="module")
def limited_run(tmp_path_factory):
    """A folder of 3 classes x 20 images, trained with --limit-per-class 10: the limit is applied before the
    hold-out (3 per class) is drawn, so a hold-out drawn from all 20 would differ and could hold training images."""
    tmp = tmp_path_factory.mktemp("limited")
    data = write_image_folder(tmp / "data", classes=("cat", "dog", "fish"), per_class=20, size=8)
    result = train(tiny_config(tmp, data=str(data), steps=6, batch_size=8, val_per_class=None, val_fraction=0.3,
                               limit_per_class=10, crop="resize"), log=quiet)
    return result, data


def evaluated(capsys, *argv) -> dict:
    assert main(["eval", *map(str, argv), "--json", "--no-progress"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("spelling", ["as trained", "trailing slash", "relative with ./", "none given"])
def test_eval_scores_exactly_the_runs_hold_out(limited_run, tmp_path, capsys, monkeypatch, spelling):
    result, data = limited_run
    record = read_split(result.run_dir)
    assert record["split"] == "hold-out" and record["images"] == 9 and record["rule"]["limit_per_class"] == 10
    monkeypatch.chdir(data.parent)
    given = {"as trained": [str(data)], "trailing slash": [f"{data}/"], "relative with ./": [f"./{data.name}"],
             "none given": []}[spelling]
    extra = ["--data", *given] if given else []
    report = evaluated(capsys, "--checkpoint", result.run_dir, *extra, "--out", tmp_path / "o")
    assert report["split"] == "hold-out" and report["images"] == 9 and "note" not in report
    assert report["top1"] == pytest.approx(result.final.top1)
    chosen = open_eval_set(given[0] if given else None, run_dir=result.run_dir,
                           run_config=load_run_config(result.run_dir), log=quiet, progress=False)
    assert chosen.reproduced and fingerprint(chosen.splits.val, data) == record["fingerprint"]


def test_evals_own_limit_subsets_the_hold_out(limited_run, tmp_path, capsys):
    result, data = limited_run
    held = set(open_eval_set(None, run_dir=result.run_dir, run_config=load_run_config(result.run_dir), log=quiet,
                             progress=False).splits.val.paths)
    limited = open_eval_set(str(data), run_dir=result.run_dir, run_config=load_run_config(result.run_dir),
                            limit_per_class=2, log=quiet, progress=False).splits.val
    assert len(limited) == 6 and set(limited.paths) <= held  # two of each class, all of them held out
    report = evaluated(capsys, "--checkpoint", result.run_dir, "--limit-per-class", 2, "--out", tmp_path / "o")
    assert report["images"] == 6 and report["split"] == "hold-out"


def test_another_hold_out_or_changed_data_is_refused(limited_run, tmp_path, capsys):
    result, data = limited_run
    assert main(["eval", "--checkpoint", result.run_dir, "--val-fraction", "0.5", "--no-progress"]) == 2
    assert "--val-fraction: " in capsys.readouterr().err
    copy = tmp_path / "copy"
    os.system(f"cp -r {data} {copy}")
    (copy / "dog" / sorted(os.listdir(copy / "dog"))[0]).unlink()
    config = load_run_config(result.run_dir)
    moved = tmp_path / "run"
    os.system(f"cp -r {result.run_dir} {moved}")
    stored = json.loads((moved / run_folder.HOLDOUT).read_text())
    stored["data"] = str(copy.resolve())  # the same run, as if trained on the copy before a file went missing
    (moved / run_folder.HOLDOUT).write_text(json.dumps(stored))
    assert config.limit_per_class == 10
    assert main(["eval", "--checkpoint", moved, "--data", copy, "--no-progress", "--out", tmp_path / "o"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the images differ from those" in err and "hold-out split, 9 images" in err


def test_after_val_split_none_eval_calls_nothing_a_hold_out(tmp_path, capsys):
    data = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=6, size=8)
    result = train(tiny_config(tmp_path, data=str(data), steps=2, batch_size=4, val_split="none", crop="resize"),
                   log=quiet)
    assert read_split(result.run_dir)["split"] == "none"
    for split in ("auto", "holdout"):
        assert main(["eval", "--checkpoint", result.run_dir, "--split", split, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "--val-split none): it has no hold-out" in err
    report = evaluated(capsys, "--checkpoint", result.run_dir, "--split", "all", "--data", f"{data}/",
                       "--out", tmp_path / "o")
    assert report["split"] == "all" and report["images"] == 12 and "not a hold-out accuracy" in report["note"]
