"""`vitkit predict`: top-k names and probabilities for real image files, from the checkpoint alone."""

from __future__ import annotations

import json

import pytest
import torch

import vitkit
from vitkit.cli import main
from vitkit.data import eval_transform, read_image
from vitkit.training.trainer import train

from test_data import class_image, truncated_jpeg, write_image_folder
from test_train import tiny_config



@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    data = write_image_folder(tmp / "data", classes=("cat", "dog", "fish"), per_class=10, size=12)
    result = train(tiny_config(tmp, data=str(data), steps=10, batch_size=8, val_per_class=2, crop="resize",
                               lr=5e-3), log=lambda m: None)
    images = tmp / "images"
    images.mkdir()
    for label in range(3):
        class_image(label, 50, 24).save(images / f"x{label}.png")  # another size: resized as the checkpoint says
    class_image(1, 51, 24).convert("L").save(images / "grey.jpg")
    return result.run_dir, images


def test_top_k_names_and_probabilities(trained, capsys):
    run, images = trained
    files = [str(images / "x0.png"), str(images / "grey.jpg")]
    assert main(["predict", str(run), *files, "--top-k", "2", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in records] == files
    model = vitkit.load(run / "model.safetensors")
    transform = eval_transform(model.preprocessing)
    for record, path in zip(records, files):
        predictions = record["predictions"]
        assert len(predictions) == 2 and {p["class"] for p in predictions} <= {"cat", "dog", "fish"}
        assert predictions[0]["probability"] >= predictions[1]["probability"]
        with torch.no_grad():
            probs = model(transform(read_image(path))[None]).softmax(dim=1)[0]
        best = int(probs.argmax())
        assert predictions[0]["index"] == best and predictions[0]["class"] == model.class_names[best]
        assert predictions[0]["probability"] == pytest.approx(float(probs[best]), rel=1e-5)

    assert main(["predict", str(run / "model.safetensors"), str(images / "x1.png"), "--top-k", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith("x1.png") and len(lines) == 4  # the path, then 3 classes (k capped by the classes)
    total = sum(float(line.split("%")[0]) for line in lines[1:])
    assert total == pytest.approx(100.0, abs=0.05)


def test_folders_expand_and_bad_images_are_reported(trained, tmp_path, capsys):
    """Folders give their image files (other files ignored, listed once); unreadable files are skipped and
    counted in one warning line, with an error record each in the JSON, as training skips them."""
    run, images = trained
    truncated_jpeg(tmp_path / "cut.jpg")
    (images / "notes.txt").write_text("not an image")
    try:
        assert main(["predict", str(run), str(images), str(tmp_path / "cut.jpg"), str(tmp_path / "none.png"),
                     "--json"]) == 0
    finally:
        (images / "notes.txt").unlink()
    captured = capsys.readouterr()
    records = json.loads(captured.out)
    assert [r["image"].rsplit("/", 1)[-1] for r in records] == ["grey.jpg", "x0.png", "x1.png", "x2.png", "cut.jpg",
                                                                "none.png"]
    assert "error" in records[4] and "not a readable image" in records[4]["error"]
    assert records[5]["error"] == "no such file"
    assert all("predictions" in r for r in records[:4])
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 2 and all(line.startswith("vitkit: warning: ") for line in warnings)
    assert warnings[0].startswith(f"vitkit: warning: ignored 1 file(s) in {images}") and "notes.txt" in warnings[0]
    assert warnings[1].startswith("vitkit: warning: skipped 2 of 6 file(s): ") and "cut.jpg" in warnings[1]

    # nothing readable: one error line, exit status 2
    assert main(["predict", str(run), str(tmp_path / "cut.jpg"), str(tmp_path / "none.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().count("\n") == 0
    assert captured.err.startswith("vitkit: error: none of the 2 files is a readable image (first: ")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    assert main(["predict", str(run), str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"vitkit: error: no image files (")
    assert f"under {empty} (1 other file(s) ignored, e.g. notes.txt)" in err[0]


def test_vitkit_predict_agrees_with_vitkit_predict_json(trained, tmp_path, capsys):
    """The command is a layer over the Python call: the same records for a folder and a bad file; vitkit.predict
    gives the (name, probability) lists of the same images, an empty one for a file it was allowed to skip."""
    from vitkit.api import predictions
    from vitkit.errors import UsageError

    run, images = trained
    truncated_jpeg(tmp_path / "cut.jpg")
    items = [str(images), str(tmp_path / "cut.jpg")]
    assert main(["predict", str(run), *items, "--top-k", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    said = []
    assert predictions(run, items, 2, max_bad_fraction=1.0, log=said.append) == printed
    assert len(said) == 1 and said[0].startswith("skipped 1 of 5 file(s)")
    tops = vitkit.predict(run, items, top_k=2, max_bad_fraction=0.5)
    assert tops == [[(p["class"], p["probability"]) for p in r.get("predictions", [])] for r in printed]
    assert len(tops) == 5 and tops[-1] == [] and all(len(top) == 2 for top in tops[:4])
    with pytest.raises(UsageError, match="1 of 5 files .* are not readable"):
        vitkit.predict(run, items)  # by default, in Python, an unreadable file is an error


def test_a_checkpoint_without_class_names_predicts_indices(trained, tmp_path, capsys):
    run, images = trained
    vitkit.save(vitkit.load(run / "model.safetensors"), tmp_path / "weights.pth", format="timm")
    assert main(["predict", str(tmp_path / "weights.pth"), str(images / "x2.png"), "--num-heads", "2",
                 "--json", "--top-k", "3"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert sorted(p["class"] for p in record["predictions"]) == ["0", "1", "2"]


def test_predict_errors(trained, tmp_path, capsys):
    run, images = trained
    assert main(["predict", str(tmp_path / "missing.safetensors"), str(images / "x0.png")]) == 2
    with pytest.raises(SystemExit) as exited:  # a number out of range: argparse's error, when the flags are read
        main(["predict", str(run), str(images / "x0.png"), "--top-k", "0"])
    assert exited.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "no such file" in errors[0] and "--top-k" in errors[1]
