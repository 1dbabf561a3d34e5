"""Evaluation: the metrics against hand counts, and `vitkit eval` on vitkit runs and on imported checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import vitkit
from vitkit.cli import main
from vitkit.eval.evaluate import match_classes, restrict_confusion
from vitkit.eval.metrics import Counts, confusion_matrix, per_class_accuracy, topk_accuracy, topk_correct
from vitkit.errors import UsageError
from vitkit.training.trainer import train

from test_data import write_image_folder
from test_train import tiny_config



def quiet(message):
    pass


# ------------------------------------------------------------------------------------------------ metrics
def test_topk_against_hand_counts():
    logits = torch.tensor([[0.1, 0.5, 0.2, 0.0],    # best 1, then 2, 0, 3
                           [0.9, 0.0, 0.3, 0.4],    # best 0, then 3, 2, 1
                           [0.0, 0.1, 0.2, 0.3]])   # best 3, then 2, 1, 0
    targets = torch.tensor([2, 0, 0])
    assert topk_correct(logits, targets, (1, 2, 3, 10)) == {1: 1, 2: 2, 3: 2, 10: 3}
    assert topk_accuracy(logits, targets, (1, 2)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3)}


def test_confusion_matrix_and_per_class_accuracy():
    cm = confusion_matrix([0, 1, 1, 2, 0], [0, 1, 2, 2, 1], 4)  # predictions, targets
    expected = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    acc = per_class_accuracy(cm)
    np.testing.assert_allclose(acc[:3], [1.0, 0.5, 0.5])
    assert np.isnan(acc[3])  # a class without images has no accuracy


def test_counts_add_up_over_batches():
    gen = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(40, 7, generator=gen), torch.randint(0, 7, (40,), generator=gen)
    whole, parts = Counts(7), Counts(7)
    whole.update(logits, targets)
    for chunk in range(4):
        parts.update(logits[chunk * 10:(chunk + 1) * 10], targets[chunk * 10:(chunk + 1) * 10])
    a, b = whole.result(), parts.result()
    np.testing.assert_array_equal(a.confusion, b.confusion)
    assert a.top1 == b.top1 == topk_accuracy(logits, targets, (1,))[1]
    assert a.top5 == b.top5 == topk_accuracy(logits, targets, (5,))[5]
    assert a.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item())


def test_class_matching():
    np.testing.assert_array_equal(match_classes(["a", "b", "c"], 3, ["c", "a"]), [2, 0])
    np.testing.assert_array_equal(match_classes(None, 10, ["3", "7"]), [3, 7])  # folders named by index
    np.testing.assert_array_equal(match_classes(None, 2, ["x", "y"]), [0, 1])  # same count: by order
    composed, decomposed = "caf\u00e9", "cafe\u0301"  # the same name as Windows/Linux and as macOS write it
    np.testing.assert_array_equal(match_classes(["dog", composed], 2, [decomposed, "dog"]), [1, 0])
    np.testing.assert_array_equal(match_classes([decomposed, "dog"], 2, [composed]), [0])
    with pytest.raises(UsageError, match="class 'z' is not one of the checkpoint's 3 classes"):
        match_classes(["a", "b", "c"], 3, ["a", "z"])
    with pytest.raises(UsageError, match="has 2 classes but the checkpoint has 5"):
        match_classes(None, 5, ["x", "y"])
    cm = np.array([[3, 1, 1], [0, 2, 0], [4, 0, 5]])
    matrix, other = restrict_confusion(cm, np.array([0, 1]))
    assert other and matrix.tolist() == [[3, 1, 1], [0, 2, 0]]


# -------------------------------------------------------------------------------------------- vitkit eval
@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("folder_run")
    data = write_image_folder(tmp / "data", classes=("cat", "dog", "fish"), per_class=12, size=8)
    result = train(tiny_config(tmp, data=str(data), steps=12, batch_size=8, val_per_class=3, crop="resize",
                               lr=5e-3), log=quiet)
    return result, data


def test_eval_of_a_run_on_its_own_hold_out(folder_run, capsys):
    result, data = folder_run
    assert main(["eval", "--checkpoint", str(result.run_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "hold-out, 9 images" in out and "per class:" in out and "cat" in out
    report = json.loads((result.run_dir / "eval-hold-out" / "results.json").read_text())
    assert report["images"] == 9 and report["top1"] == pytest.approx(result.final.top1)
    assert report["top5"] == 1.0  # three classes
    assert set(report["per_class"]) == {"cat", "dog", "fish"}
    matrix = np.array(report["confusion"]["matrix"])
    assert matrix.sum() == 9 and matrix.sum(axis=1).tolist() == [3, 3, 3]
    assert np.trace(matrix) / 9 == pytest.approx(report["top1"])
    png = result.run_dir / "eval-hold-out" / "confusion.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_eval_on_every_image_of_a_folder(folder_run, tmp_path, capsys):
    result, data = folder_run
    out = tmp_path / "out"
    assert main(["eval", "--checkpoint", str(result.run_dir / "model.safetensors"), "--data", str(data),
                 "--split", "all", "--out", str(out), "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 36 and report["split"] == "all" and (out / "confusion.png").is_file()


def test_eval_int8_quantized_agrees_with_float32(folder_run, tmp_path, capsys):
    pytest.importorskip("torchao")
    result, data = folder_run
    reports = {}
    for precision in ("fp32", "int8"):
        assert main(["eval", "--checkpoint", str(result.run_dir), "--precision", precision, "--json",
                     "--out", str(tmp_path / precision), "--no-progress"]) == 0
        reports[precision] = json.loads(capsys.readouterr().out)
    assert reports["int8"]["precision"] == "int8" and reports["int8"]["images"] == 9
    # nine images of a tiny model: int8 may move at most one of them
    assert abs(reports["int8"]["top1"] - reports["fp32"]["top1"]) <= 1 / 9 + 1e-9
    assert reports["int8"]["loss"] == pytest.approx(reports["fp32"]["loss"], rel=0.05)
    assert reports["int8"]["loss"] != reports["fp32"]["loss"]  # the quantized model did run


def test_vitkit_evaluate_returns_what_vitkit_eval_prints(folder_run, tmp_path, capsys, monkeypatch):
    """The command is a layer over vitkit.evaluate: the same record, few-shot included; output=None writes nothing."""
    result, data = folder_run
    assert main(["eval", str(result.run_dir), "--few-shot", "1,2", "--few-shot-draws", "2", "--json",
                 "--no-progress", "-o", str(tmp_path / "cli")]) == 0
    printed = json.loads(capsys.readouterr().out)
    returned = vitkit.evaluate(result.run_dir, few_shot=[1, 2], few_shot_draws=2, output=tmp_path / "api")
    assert json.loads((tmp_path / "api" / "results.json").read_text()) == returned
    assert printed.pop("confusion_png") == str(tmp_path / "cli" / "confusion.png")
    assert returned.pop("confusion_png") == str(tmp_path / "api" / "confusion.png")
    assert returned == printed and returned["split"] == "hold-out" and set(returned["few_shot"]) == {"1", "2"}
    monkeypatch.chdir(tmp_path / "api")
    before = sorted(p.name for p in (tmp_path / "api").iterdir())
    model = vitkit.load(result.run_dir / "model.safetensors")
    alone = vitkit.evaluate(model, data, split="all")
    assert alone["checkpoint"] is None and alone["images"] == 36 and "confusion_png" not in alone
    assert sorted(p.name for p in (tmp_path / "api").iterdir()) == before  # output=None: no files


def test_flip_averaging_is_the_mean_of_the_image_and_mirror_probabilities(folder_run, capsys):
    """--flip: each image's probabilities averaged with its mirror image's; top-1 and loss follow from that mean."""
    from vitkit.data.sources import open_data
    from vitkit.eval.evaluate import eval_batches

    result, data = folder_run
    model = vitkit.load(result.run_dir / "model.safetensors").eval()
    images = open_data(str(data), want_train=True, want_val=False, val_split="none", log=lambda m: None,
                       progress=False).train
    hits, loss, count = 0, 0.0, 0
    with torch.no_grad():
        for x, y in eval_batches(model, images, 64, 0):
            p = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
            hits += int((p.argmax(1) == y).sum())
            loss += float(-p[torch.arange(len(y)), y].log().sum())
            count += len(y)
    flipped = vitkit.evaluate(model, data, split="all", flip=True)
    plain = vitkit.evaluate(model, data, split="all")
    assert flipped["flip"] is True and plain["flip"] is False and flipped["images"] == count == 36
    assert flipped["top1"] == pytest.approx(hits / count) and flipped["loss"] == pytest.approx(loss / count, rel=1e-5)
    assert flipped["loss"] != pytest.approx(plain["loss"], rel=1e-6)  # the mirror images do count
    assert main(["eval", str(result.run_dir), "--data", str(data), "--split", "all", "--flip", "--json",
                 "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == flipped["top1"]


def test_a_run_with_eval_flip_evaluates_flip_averaged_and_eval_of_it_follows(tmp_path, capsys):
    """eval_flip: the run's evaluations average each image with its mirror image (recorded as such), and `vitkit
    eval RUN` does the same unless told --no-flip, which gives the single-view figure."""
    data = write_image_folder(tmp_path / "data", classes=("cat", "dog", "fish"), per_class=12, size=8)
    result = train(tiny_config(tmp_path, data=str(data), steps=6, batch_size=8, val_per_class=3, crop="resize",
                               lr=5e-3, eval_flip=True), log=quiet)
    evals = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["kind"] == "eval"]
    assert evals and all(r["flip"] is True for r in evals)
    followed = vitkit.evaluate(result.run_dir)
    assert followed["flip"] is True and followed["loss"] == pytest.approx(evals[-1]["loss"], rel=1e-5)
    model = vitkit.load(result.run_dir / "model.safetensors")
    single = vitkit.evaluate(result.run_dir, flip=False)
    assert single["flip"] is False and single["loss"] != pytest.approx(followed["loss"], rel=1e-6)
    assert main(["eval", str(result.run_dir), "--no-flip", "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(single["loss"])
    assert main(["eval", str(result.run_dir), "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "flip-averaged" in out.out and "as the run evaluated" in out.err + out.out
    assert vitkit.evaluate(model, data, split="all")["flip"] is False  # a bare model has no run to follow


def test_an_unusable_output_folder_is_refused_before_evaluating(folder_run, tmp_path, monkeypatch):
    """vitkit.evaluate(output=...) checks the folder first, as `vitkit eval -o` does: no evaluation is wasted."""
    import vitkit.training.holdout as holdout

    result, data = folder_run
    calls = []
    monkeypatch.setattr(holdout, "open_eval_set", lambda *a, **k: calls.append(1))  # the images are never opened
    with pytest.raises(UsageError, match="does not exist"):
        vitkit.evaluate(result.run_dir, output=tmp_path / "missing" / "eval")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        vitkit.evaluate(result.run_dir, output=tmp_path / "a-file")
    assert (tmp_path / "a-file").read_text() == "x" and not calls


def test_eval_of_imported_checkpoints_needs_nothing_else(tmp_path, capsys):
    """The same weights as a timm .pth (no names, no preprocessing) and as a Hugging Face folder."""
    result = train(tiny_config(tmp_path, steps=4), log=quiet)
    model = vitkit.load(result.run_dir / "model.safetensors")
    vitkit.save(model, tmp_path / "timm.pth", format="timm")
    vitkit.save(model, tmp_path / "hf", format="hf")
    assert vitkit.load(tmp_path / "timm.pth", num_heads=2).class_names is None
    tops = {}
    for name, extra in (("timm.pth", ["--num-heads", "2"]), ("hf", [])):
        assert main(["eval", "--checkpoint", str(tmp_path / name), "--data", "digits", "--json", "--no-progress",
                     "--out", str(tmp_path / f"eval-{name}"), *extra]) == 0
        tops[name] = json.loads(capsys.readouterr().out)["top1"]
    assert tops["timm.pth"] == tops["hf"] == pytest.approx(result.final.top1)


def test_eval_errors_are_one_line(folder_run, tmp_path, capsys):
    result, data = folder_run
    with pytest.warns(UserWarning, match="3 class names are not written"):  # a .pth holds tensors only
        vitkit.save(vitkit.load(result.run_dir / "model.safetensors"), tmp_path / "timm.pth", format="timm")
    other = write_image_folder(tmp_path / "other", classes=("ant", "bee"), per_class=2, size=8)
    cases = [
        (["--checkpoint", str(result.run_dir), "--data", str(other)], "class 'ant' is not one of the checkpoint's"),
        (["--checkpoint", str(tmp_path / "timm.pth"), "--num-heads", "2", "--data", "digits"],
         "has 10 classes but the checkpoint has 3"),
        (["--checkpoint", str(tmp_path / "nothing.safetensors"), "--data", "digits"], "no such file"),
        (["--checkpoint", str(tmp_path / "timm.pth"), "--num-heads", "2"], "--data is needed"),
        (["--checkpoint", str(result.run_dir), "--data", str(tmp_path / "absent")], "no such folder"),
    ]
    for args, message in cases:
        assert main(["eval", *args, "--no-progress", "--out", str(tmp_path / "o")]) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        # one line for the error; a bare timm file also announces its guesses, one line
        assert len(lines) <= 2 and message in lines[-1] and lines[-1].startswith("vitkit: error:"), (args, lines)
        assert all(line.startswith("vitkit: warning: ") for line in lines[:-1]), (args, lines)


@pytest.mark.parametrize("present", [("dog", "fish"), ("fish",)])
def test_eval_on_a_subset_of_the_classes(folder_run, tmp_path, capsys, present):
    """Data holding some of the model's 3 classes: metrics over those, the confusion matrix of those, and a PNG;
    with a model that predicts only the absent class "cat", the matrix gains an "other" column."""
    from vitkit.data import eval_transform, read_image

    result, data = folder_run
    subset = write_image_folder(tmp_path / "subset", classes=present, per_class=5, size=8)
    model = vitkit.load(result.run_dir / "model.safetensors")
    transform = eval_transform(model.preprocessing)
    expected_hits = 0
    for name in present:
        for path in sorted((subset / name).iterdir()):
            with torch.no_grad():
                expected_hits += model.class_names[int(model(transform(read_image(path))[None]).argmax())] == name
    with torch.no_grad():
        model.head.bias[model.class_names.index("cat")] = 1e4  # every image predicted as "cat"
    vitkit.save(model, tmp_path / "cat.safetensors")
    n = 5 * len(present)

    for checkpoint in (result.run_dir, tmp_path / "cat.safetensors"):
        out = tmp_path / f"out-{checkpoint.name}"
        assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(subset), "--json", "--no-progress",
                     "--out", str(out)]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["images"] == n and set(report["per_class"]) == set(present)
        classes = report["confusion"]["classes"]
        matrix = np.array(report["confusion"]["matrix"])
        assert classes[:len(present)] == list(present) and matrix.shape == (len(present), len(classes))
        assert matrix.sum(axis=1).tolist() == [5] * len(present)
        assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
        if checkpoint == result.run_dir:
            assert report["top1"] == pytest.approx(expected_hits / n)
        else:
            assert classes == [*present, "other"] and matrix[:, -1].tolist() == [5] * len(present)
            assert report["top1"] == 0 and all(v == 0 for v in report["per_class"].values())


def test_results_of_other_data_are_replaced_aloud_and_quiet_keeps_warnings(folder_run, tmp_path, capsys):
    result, data = folder_run
    out = tmp_path / "out"
    subset = tmp_path / "subset"
    shutil.copytree(data / "cat", subset / "cat")
    (subset / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    base = ["eval", str(result.run_dir), "--split", "all", "-o", str(out), "--no-progress"]
    assert main([*base, "--data", str(data)]) == 0
    assert "replacing" not in capsys.readouterr().out
    assert main([*base, "--data", str(data), "-q"]) == 0  # the same evaluation again: no replacing note
    err = capsys.readouterr().err
    assert "replacing" not in err and "vitkit: note: every image of" in err  # -q keeps the notes
    assert main([*base, "--data", str(subset), "--max-bad-fraction", "0.5", "-q"]) == 0
    err = capsys.readouterr().err
    assert f"note: replacing {out / 'results.json'}, an evaluation of checkpoint" in err and str(data) in err
    assert "broken.png" in err  # -q keeps what warns
    assert json.loads((out / "results.json").read_text())["data"] == str(subset)
