"""Data: the built-in digits, ImageFolder trees with bad files, CIFAR pickles, hold-out splits, and loaders whose
order and augmentation depend only on (seed, step)."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.configs import Preprocessing
from vitkit.data import (StepBatchSampler, TransformedImages, detect_layout, eval_transform, holdout_indices,
                         open_data, scan_image_folder, train_transform)
from vitkit.errors import UsageError


REPO = Path(__file__).resolve().parents[1]
CIFAR_TAR = REPO.parent / "shared" / "data" / "cifar10" / "train.tar.gz"


# ------------------------------------------------------------------------------------------------ helpers
def class_image(label: int, index: int, size: int = 12) -> Image.Image:
    """A small RGB image whose pattern depends on the class (so a tiny model can learn something)."""
    rng = np.random.default_rng(1000 * label + index)
    array = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    array[:, :, label % 3] += np.uint8(120)
    if label % 2:
        array[: size // 2] += np.uint8(60)
    return Image.fromarray(array)


def write_image_folder(root: Path, classes=("cat", "dog", "fish"), per_class: int = 6, size: int = 12,
                       fmt: str = "png") -> Path:
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            class_image(label, i, size).save(folder / f"{i:03d}.{fmt}")
    return root


def truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    class_image(0, 99, 96).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    path.write_bytes(data[: int(len(data) * 0.7)])  # headers intact, scan data cut


def write_cifar_pickles(root: Path, per_batch: int = 6, batches: int = 2) -> Path:
    """The CIFAR-10 python layout, with real pickle files (numpy arrays inside, as the original)."""
    root.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch}, f, protocol=2)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i + 1}" for i in range(batches)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f, protocol=2)
    return root


def extract_cifar_subset(tar_path: Path, dest: Path, per_class: int) -> Path:
    """The first `per_class` JPEGs of each class of the shared CIFAR-10 tarball (the rest is never written)."""
    counts: dict[str, int] = {}
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3:
                continue
            if counts.get(parts[1], 0) >= per_class:
                continue
            counts[parts[1]] = counts.get(parts[1], 0) + 1
            target = dest / parts[0] / parts[1] / parts[2]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    return dest


# ------------------------------------------------------------------------------------------------ digits
def test_digits_has_a_fixed_stratified_test_split():
    a = open_data("digits", progress=False)
    b = open_data("digits", progress=False, split_seed=5)  # the digits test split does not move with split_seed
    assert a.classes == [str(i) for i in range(10)]
    assert len(a.train) + len(a.val) == 1797 and a.val_name == "test"
    assert abs(len(a.val) - 0.2 * 1797) < 10
    np.testing.assert_array_equal(a.val.labels, b.val.labels)
    assert all(np.asarray(a.val.arrays[i]).tobytes() == np.asarray(b.val.arrays[i]).tobytes() for i in range(20))
    counts = a.val.class_counts()
    assert counts.min() >= 34 and counts.max() <= 38  # about 20% of each class
    image = a.train.load(0)
    assert image.mode == "RGB" and image.size == (8, 8)


# -------------------------------------------------------------------------------------------- ImageFolder
def test_image_folder_reads_classes_in_order(tmp_path):
    write_image_folder(tmp_path / "d", classes=("b", "a", "c"), per_class=3)
    images = scan_image_folder(tmp_path / "d", progress=False, log=lambda m: None)
    assert images.classes == ["a", "b", "c"]
    assert list(images.labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert images.in_memory and images.load(4).size == (12, 12)
    files = scan_image_folder(tmp_path / "d", cache="no", progress=False, log=lambda m: None)
    assert not files.in_memory and files.paths[3].endswith(os.path.join("b", "000.png"))
    assert np.array_equal(np.asarray(files.load(4)), np.asarray(images.load(4)))


def test_bad_files_are_skipped_logged_and_counted(tmp_path):
    root = write_image_folder(tmp_path / "d", per_class=40)
    truncated_jpeg(root / "cat" / "truncated.jpg")
    (root / "dog" / "notes.jpg").write_text("not an image")  # an image by name: a broken image
    (root / "fish" / "broken.png").symlink_to(root / "missing.png")  # a file that cannot be opened
    assert Image.open(root / "cat" / "truncated.jpg").size == (96, 96)  # opens fine: only decoding fails
    logged = []
    images = scan_image_folder(root, max_bad_fraction=0.05, progress=False, log=logged.append)
    assert len(images) == 120
    assert sorted(Path(p).name for p, _ in images.bad_files) == ["broken.png", "notes.jpg", "truncated.jpg"]
    assert len(logged) == 3 and all("skipped" in m for m in logged)
    assert any("truncated.jpg" in m for m in logged)


def test_too_many_bad_files_stop_with_a_clear_message(tmp_path):
    root = write_image_folder(tmp_path / "d", per_class=30)
    truncated_jpeg(root / "cat" / "truncated.jpg")  # 1 of 91 files: above the default 1%
    with pytest.raises(UsageError, match=r"1 of 91 files \(1\.1%\) are not readable images.*limit of 1%"):
        scan_image_folder(root, progress=False, log=lambda m: None)
    assert len(scan_image_folder(root, max_bad_fraction=0.02, progress=False, log=lambda m: None)) == 90


@pytest.mark.parametrize("case, message", [
    ("missing", "no such folder"),
    ("empty", "no class folders"),
    ("empty_class", "class 'dog' has no images"),
    ("unreadable_class", "class 'dog' has no readable images"),
])
def test_folder_errors(tmp_path, case, message):
    root = tmp_path / "d"
    if case == "empty":
        root.mkdir()
    elif case in ("empty_class", "unreadable_class"):
        write_image_folder(root, classes=("cat",), per_class=200)
        (root / "dog").mkdir()
        if case == "unreadable_class":
            (root / "dog" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(UsageError, match=message):
        open_data(str(root), progress=False, log=lambda m: None, max_bad_fraction=0.5)


def test_layouts(tmp_path):
    assert detect_layout("digits").kind == "digits"
    write_image_folder(tmp_path / "flat", per_class=2)
    assert detect_layout(str(tmp_path / "flat")).kind == "folder"
    write_image_folder(tmp_path / "only_train" / "train", per_class=2)
    layout = detect_layout(str(tmp_path / "only_train"))
    assert layout.kind == "folder" and layout.train_root.name == "train"
    write_image_folder(tmp_path / "split" / "train", per_class=4)
    write_image_folder(tmp_path / "split" / "val", per_class=2)
    splits = open_data(str(tmp_path / "split"), progress=False)
    assert splits.val_name == "val" and len(splits.train) == 12 and len(splits.val) == 6
    write_cifar_pickles(tmp_path / "c" / "cifar-10-batches-py")
    assert detect_layout(str(tmp_path / "c")).kind == "cifar"
    with pytest.raises(UsageError, match="no such folder"):
        detect_layout(str(tmp_path / "nowhere"))


def test_holdout_is_stratified_seeded_and_disjoint(tmp_path):
    labels = np.repeat(np.arange(4), 25)
    train, held = holdout_indices(labels, 4, per_class=5, seed=3)
    assert len(held) == 20 and np.bincount(labels[held]).tolist() == [5, 5, 5, 5]
    assert not set(train) & set(held) and len(train) + len(held) == 100
    again, _ = holdout_indices(labels, 4, per_class=5, seed=3)
    other, held_other = holdout_indices(labels, 4, per_class=5, seed=4)
    assert np.array_equal(train, again) and not np.array_equal(held, held_other)
    _, by_fraction = holdout_indices(labels, 4, fraction=0.2, seed=0)
    assert len(by_fraction) == 20

    write_image_folder(tmp_path / "d", per_class=10)
    splits = open_data(str(tmp_path / "d"), val_per_class=3, progress=False)
    assert splits.val_name == "hold-out" and len(splits.val) == 9 and len(splits.train) == 21
    assert not set(splits.train.paths) & set(splits.val.paths)
    everything = open_data(str(tmp_path / "d"), want_train=False, flat_eval="all", progress=False)
    assert everything.val_name == "all" and len(everything.val) == 30
    said = []  # more per class than a class has: each class keeps one for training, and that is announced
    splits = open_data(str(tmp_path / "d"), val_per_class=12, progress=False, log=said.append)
    assert len(splits.val) == 27 and len(splits.train) == 3
    assert [m for m in said if m.startswith("note: val_per_class=12")] == [
        "note: val_per_class=12, but 3 class(es) have no more images than that: cat (10), dog (10), fish (10); each "
        "keeps one image for training and holds out the rest"]


def test_cifar_pickles_load_without_running_code(tmp_path):
    root = write_cifar_pickles(tmp_path / "cifar-10-batches-py", per_batch=6, batches=2)
    splits = open_data(str(root), progress=False)
    assert splits.classes[0] == "airplane" and len(splits.classes) == 10
    assert len(splits.train) == 12 and len(splits.val) == 6 and splits.val_name == "test"
    assert splits.train.load(0).size == (32, 32)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(root / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(UsageError, match="refused"):
        open_data(str(root), progress=False)


# ---------------------------------------------------------------------------------------------- loaders
def _keys(num_items, batch, accum, world, rank, start, end, seed=0):
    return list(StepBatchSampler(num_items, batch, accum, world, rank, seed, start, end))


def test_sampler_splits_each_global_batch_across_ranks_and_micro_batches():
    single = _keys(50, 8, 1, 1, 0, 0, 12)  # 12 steps over 6 steps per epoch: two epochs
    assert len(single) == 12 and all(len(b) == 8 for b in single)
    assert len({k[0] for b in single[:6] for k in b}) == 48  # no image twice within an epoch
    assert [k[0] for k in single[0]] != [k[0] for k in single[6]]  # a new order each epoch
    two_ranks = [_keys(50, 8, 2, 2, r, 0, 12) for r in range(2)]  # 2 micro-batches of 2 images per rank
    for step in range(12):
        pieces = [two_ranks[r][2 * step + a] for a in range(2) for r in range(2)]
        assert [k for piece in pieces for k in piece] == single[step]  # same images, same augmentation seeds
    assert _keys(50, 8, 1, 1, 0, 7, 12) == single[7:]  # resuming at step 7 draws what step 7 drew


def test_augmentation_depends_only_on_the_key(tmp_path):
    images = scan_image_folder(write_image_folder(tmp_path / "d", per_class=2), progress=False)
    transform = train_transform(Preprocessing(image_size=8), randaugment_ops=2, crop_min_area=0.3)
    data = TransformedImages(images, transform)
    torch.manual_seed(0)
    a, label = data[(1, 42)]
    state = torch.get_rng_state()
    b, _ = data[(1, 42)]
    assert torch.equal(state, torch.get_rng_state())  # the caller's random state is left alone
    assert torch.equal(a, b) and not torch.equal(a, data[(1, 43)][0])
    assert a.shape == (3, 8, 8) and label == 0


def test_eval_transform_follows_the_preprocessing():
    image = class_image(1, 0, 20)
    x = eval_transform(Preprocessing(image_size=16, mean=(0.5,) * 3, std=(0.5,) * 3))(image)
    assert x.shape == (3, 16, 16) and x.min() >= -1.0 and x.max() <= 1.0
    cropped = eval_transform(Preprocessing(image_size=(8, 8), crop_pct=0.5, mean=(0, 0, 0), std=(1, 1, 1)))(image)
    assert cropped.shape == (3, 8, 8) and 0 <= cropped.min() and cropped.max() <= 1


@pytest.mark.skipif(not CIFAR_TAR.is_file(), reason="needs ../shared/data/cifar10")
def test_cifar_jpeg_tree_subset(tmp_path):
    root = extract_cifar_subset(CIFAR_TAR, tmp_path / "cifar", per_class=12)
    splits = open_data(str(root), val_per_class=2, progress=False)
    assert splits.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                              "truck"]
    assert len(splits.train) == 100 and len(splits.val) == 20 and not splits.bad_files
    assert splits.train.load(0).size == (32, 32)
