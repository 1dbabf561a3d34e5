"""`vitkit inspect ...` writes a PNG of sensible size from a real checkpoint file and real image files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import vitkit
from vitkit.cli import main
from vitkit.configs import ResNetConfig


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    model = vitkit.create_model("ViT-Ti/16", num_classes=4, image_size=16, patch_size=4, width=24, depth=2,
                                num_heads=3, mlp_dim=32)
    vitkit.save(model, root / "model.safetensors")
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (root / "data" / cls).mkdir(parents=True)
        for i in range(3):  # sizes other than the model's: the command resizes them
            pixels = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "data" / cls / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8)).save(root / "grey.jpg")  # greyscale JPEG
    return root


def check_png(path, min_side=100, max_side=4000):
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 2_000 < path.stat().st_size < 1_000_000
    with Image.open(path) as image:
        width, height = image.size
        assert min_side <= width <= max_side and min_side <= height <= max_side, image.size
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 5  # not a blank canvas


def test_inspect_attention(workspace, tmp_path, capsys):
    out = tmp_path / "figs" / "attention.png"
    images = [str(workspace / "data" / "cats" / "0.png"), str(workspace / "grey.jpg")]
    argv = ["inspect", "attention", str(workspace / "model.safetensors"), *images, "--out", str(out),
            "--arrays", str(tmp_path / "attention.npz"), "--batch-size", "1"]
    assert main(argv) == 2  # the PNG's folder is not made for it
    assert f"the folder {out.parent} does not exist" in capsys.readouterr().err
    out.parent.mkdir()
    code = main(argv)
    assert code == 0
    check_png(out)
    check_png(tmp_path / "figs" / "attention_heads.png")
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed
    arrays = np.load(tmp_path / "attention.npz")
    assert arrays["rollout"].shape == (2, 4, 4)
    assert arrays["class_token_attention"].shape == (2, 3, 4, 4)  # (layers, heads, gh, gw) of the first image
    np.testing.assert_allclose(arrays["rollout"].reshape(2, -1).max(axis=1), 1.0, atol=1e-6)


def test_inspect_distance(workspace, tmp_path, capsys):
    out = tmp_path / "distance.png"
    code = main(["inspect", "distance", str(workspace / "model.safetensors"), "--data", str(workspace / "data"),
                 "--num-images", "4", "--batch-size", "3", "--out", str(out), "--arrays", str(tmp_path / "d.npz")])
    assert code == 0
    check_png(out)
    printed = capsys.readouterr().out
    assert "over 4 images" in printed
    distances = np.load(tmp_path / "d.npz")["mean_attention_distance"]
    assert distances.shape == (2, 3)
    assert np.all((distances > 0) & (distances < 12 * np.sqrt(2)))


def test_inspect_posemb(workspace, tmp_path, capsys):
    out = tmp_path / "posemb.png"
    assert main(["inspect", "posemb", str(workspace / "model.safetensors"), "--out", str(out),
                 "--arrays", str(tmp_path / "p.npz")]) == 0
    check_png(out)
    similarity = np.load(tmp_path / "p.npz")["position_embedding_similarity"]
    assert similarity.shape == (4, 4, 4, 4)
    np.testing.assert_allclose(similarity.reshape(16, 16).diagonal(), 1.0, atol=1e-6)


def test_inspect_filters(workspace, tmp_path, capsys):
    out = tmp_path / "filters.png"
    assert main(["inspect", "filters", str(workspace / "model.safetensors"), "--out", str(out),
                 "--components", "12", "--columns", "6", "--arrays", str(tmp_path / "f.npz")]) == 0
    check_png(out)
    arrays = np.load(tmp_path / "f.npz")
    assert arrays["components"].shape == (12, 3, 4, 4)
    assert "12 principal components" in capsys.readouterr().out


def test_inspect_errors_are_one_line_and_exit_2(workspace, tmp_path, capsys):
    hybrid = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=32, patch_size=2, width=8, depth=1,
                                 num_heads=1, mlp_dim=4, resnet=ResNetConfig(num_layers=()))
    vitkit.save(hybrid, tmp_path / "hybrid.safetensors")
    no_posemb = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=8, patch_size=4, width=8, depth=1,
                                    num_heads=1, mlp_dim=4, posemb="none", pool="gap")
    vitkit.save(no_posemb, tmp_path / "none.safetensors")
    (tmp_path / "empty").mkdir()
    cases = [
        (["filters", str(tmp_path / "hybrid.safetensors")], "hybrid"),
        (["posemb", str(tmp_path / "none.safetensors")], "no position embeddings"),
        (["distance", str(workspace / "model.safetensors"), "--data", str(tmp_path / "empty")], "no image files"),
        (["distance", str(workspace / "model.safetensors"), "--data", str(tmp_path / "nowhere")], "not found"),
        (["attention", str(workspace / "model.safetensors"), str(tmp_path / "missing.png")],
         f"{tmp_path / 'missing.png'}: no such file"),
        (["attention", str(workspace / "model.safetensors"), str(tmp_path / "empty")], "no image files"),
        (["posemb", str(tmp_path / "missing.safetensors")], "missing.safetensors"),
    ]
    for argv, message in cases:
        code = main(["inspect", *argv, "--out", str(tmp_path / "x.png")])
        err = capsys.readouterr().err
        assert code == 2, argv
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.png").exists()


def _messy_copy(workspace, root):
    """The workspace's image tree plus a text file and a truncated JPEG in each class folder."""
    import shutil

    from test_data import truncated_jpeg

    shutil.copytree(workspace / "data", root)
    for cls in ("cats", "dogs"):
        (root / cls / "notes.txt").write_text("not an image")
        truncated_jpeg(root / cls / "cut.jpg")
    return root


def test_inspect_attention_takes_folders_and_skips_unreadable_images(workspace, tmp_path, capsys):
    """A folder gives its image files (other files ignored, listed once); an unreadable image is skipped and counted
    in one warning line, as training and predict do; an error only when none is readable."""
    data = _messy_copy(workspace, tmp_path / "data")
    out = tmp_path / "attention.png"
    assert main(["inspect", "attention", str(workspace / "model.safetensors"), str(data), str(workspace / "grey.jpg"),
                 "--out", str(out), "--arrays", str(tmp_path / "a.npz"), "--batch-size", "4"]) == 0
    check_png(out)
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 2 and all(line.startswith("vitkit: warning: ") for line in warnings)
    assert warnings[0].startswith(f"vitkit: warning: ignored 2 file(s) in {data}") and "notes.txt" in warnings[0]
    assert warnings[1].startswith("vitkit: warning: skipped 2 of 9 file(s): ") and "cut.jpg" in warnings[1]
    assert np.load(tmp_path / "a.npz")["rollout"].shape == (7, 4, 4)  # 6 images of the folder and grey.jpg
    assert "attention rollout of 7 image(s)" in captured.out

    broken = tmp_path / "broken"
    broken.mkdir()
    from test_data import truncated_jpeg

    truncated_jpeg(broken / "a.jpg")
    (broken / "b.png").write_bytes(b"junk")
    assert main(["inspect", "attention", str(workspace / "model.safetensors"), str(broken),
                 "--out", str(tmp_path / "none.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vitkit: error: none of the 2 files is a readable image")
    assert not (tmp_path / "none.png").exists()


def test_inspect_distance_skips_unreadable_images(workspace, tmp_path, capsys):
    data = _messy_copy(workspace, tmp_path / "data")
    out = tmp_path / "distance.png"
    assert main(["inspect", "distance", str(workspace / "model.safetensors"), "--data", str(data),
                 "--num-images", "100", "--batch-size", "4", "--out", str(out)]) == 0
    check_png(out)
    captured = capsys.readouterr()
    assert "over 6 images" in captured.out
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 2 and "ignored 2 file(s)" in warnings[0] and "skipped 2 of 8 file(s)" in warnings[1]
