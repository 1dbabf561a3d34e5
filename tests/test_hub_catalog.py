"""The catalog of published checkpoints: every entry well formed, and every torchvision and timm entry the same as
the installed torchvision's weight enums and timm's pretrained configs say (URL, hub id, resolution, accuracy,
preprocessing), so that the table cannot drift from its sources unnoticed."""

from __future__ import annotations

import re

import pytest

from vitkit.configs import variant_config
from vitkit.hub import catalog as cat
from vitkit.hub.catalog import CATALOG, class_ids, class_names, find_pretrained, list_pretrained

GCS_HTTPS = "https://storage.googleapis.com/"


def https_of(uri: str) -> str:
    return GCS_HTTPS + uri[len("gs://"):] if uri.startswith("gs://") else uri


def test_at_least_40_entries_with_unique_names():
    names = [e.name for e in CATALOG]
    assert len(names) >= 40
    assert len(set(names)) == len(names)
    assert len({e.uri for e in CATALOG}) == len(CATALOG), "two entries point at the same file"
    assert {e.source for e in CATALOG} == set(cat.SOURCES)


@pytest.mark.parametrize("entry", CATALOG, ids=lambda e: e.name)
def test_entry_fields_are_valid(entry):
    assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*", entry.name)
    assert entry.source in cat.SOURCES and entry.format in cat.FORMATS
    config = variant_config(entry.variant, image_size=entry.image_size, num_classes=entry.num_classes)
    assert config.image_size == (entry.image_size, entry.image_size)
    if entry.class_names is not None:
        assert cat.CLASS_LISTS[entry.class_names] == entry.num_classes
    assert entry.num_classes in (0, 1000, 21843)
    assert len(entry.mean) == len(entry.std) == 3 and all(s > 0 for s in entry.std)
    assert entry.interpolation in ("bilinear", "bicubic") and 0.5 < entry.crop_pct <= 1.0
    assert (entry.top1 is None) == (entry.top1_data is None)
    assert entry.top1 is None or 50.0 < entry.top1 < 100.0
    assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
    assert entry.sha256_prefix is None or re.fullmatch(r"[0-9a-f]{6,63}", entry.sha256_prefix)
    assert entry.pretrain_data and entry.license and entry.reference
    pre = entry.preprocessing
    assert pre.image_size == (entry.image_size, entry.image_size) and pre.mean == entry.mean
    if entry.format == "google-npz":
        assert entry.uri.startswith("gs://vit_models/") and entry.uri.endswith(".npz")
    elif entry.format == "torchvision-pth":
        assert entry.uri.startswith("https://download.pytorch.org/models/") and entry.uri.endswith(".pth")
        assert f"-{entry.sha256_prefix}.pth" in entry.uri
    else:
        assert entry.uri == f"hf-hub:{entry.hf_hub_id}"
    if entry.source == "timm":
        assert entry.name == f"timm-{entry.timm_name}" and entry.hf_hub_id == f"timm/{entry.timm_name}"


def test_the_original_release_as_its_readme_lists_it():
    jax = {e.name: e for e in CATALOG if e.source == "vit_jax"}
    pre = {e.uri.rsplit("/", 1)[1] for e in jax.values() if "/imagenet21k/" in e.uri}
    fine = {e.uri.rsplit("/", 1)[1] for e in jax.values() if "/imagenet21k+imagenet2012/" in e.uri}
    assert pre == {"ViT-B_16.npz", "ViT-B_32.npz", "ViT-L_16.npz", "ViT-L_32.npz", "ViT-H_14.npz", "R50+ViT-B_16.npz"}
    assert fine == {"ViT-B_16.npz", "ViT-B_16-224.npz", "ViT-B_32.npz", "ViT-L_16.npz", "ViT-L_16-224.npz",
                    "ViT-L_32.npz", "R50+ViT-B_16.npz"}
    assert jax["vit-b16-in21k-ft-in1k-224"].top1 == 81.2 and jax["vit-l16-in21k-ft-in1k-224"].top1 == 82.7
    assert all(e.image_size == (224 if "-224" in e.uri or "/imagenet21k/" in e.uri else 384) for e in jax.values())
    augreg = [e for e in CATALOG if e.source == "augreg"]
    assert len(augreg) == 18 and sum(e.top1 is not None for e in augreg) == 9


TORCHVISION = [e for e in CATALOG if e.source == "torchvision"]


def _weights(entry):
    import torchvision.models

    enum_name, member = entry.reference.removeprefix("torchvision.models.").split(".")
    return getattr(getattr(torchvision.models, enum_name), member)


@pytest.mark.parametrize("entry", TORCHVISION, ids=lambda e: e.name)
def test_torchvision_entries_match_the_weight_enums(entry):
    from torchvision.transforms import InterpolationMode

    weights = _weights(entry)
    assert weights.url == entry.uri
    assert weights.meta["_metrics"]["ImageNet-1K"]["acc@1"] == entry.top1
    assert len(weights.meta["categories"]) == entry.num_classes
    assert weights.meta.get("license", entry.license) == entry.license
    transform = weights.transforms()
    assert transform.crop_size == [entry.image_size]
    assert transform.resize_size == [round(entry.image_size / entry.crop_pct)]
    assert tuple(transform.mean) == entry.mean and tuple(transform.std) == entry.std
    assert transform.interpolation == InterpolationMode(entry.interpolation)
    assert weights.meta["min_size"] == (entry.image_size, entry.image_size) or entry.image_size == 224


def test_every_torchvision_vit_weight_is_in_the_catalog():
    import torchvision.models as tvm

    urls = {w.url for enum in (tvm.ViT_B_16_Weights, tvm.ViT_B_32_Weights, tvm.ViT_L_16_Weights,
                               tvm.ViT_L_32_Weights, tvm.ViT_H_14_Weights) for w in enum}
    assert urls == {e.uri for e in TORCHVISION}


TIMM_LINKED = [e for e in CATALOG if e.timm_name]


@pytest.mark.parametrize("entry", TIMM_LINKED, ids=lambda e: e.name)
def test_timm_entries_match_the_pretrained_configs(entry):
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(entry.timm_name)
    assert cfg is not None, f"timm has no pretrained config {entry.timm_name}"
    if entry.source == "timm":
        assert cfg.hf_hub_id == entry.hf_hub_id
        assert cfg.input_size[-1] == entry.image_size
        assert tuple(cfg.mean) == entry.mean and tuple(cfg.std) == entry.std
        assert cfg.crop_pct == entry.crop_pct and cfg.interpolation == entry.interpolation
        assert cfg.num_classes == entry.num_classes
        assert (cfg.license or "").lower() == entry.license.lower()
        # timm's config lists no accuracy; an entry's top-1 must come from its authors (DeiT's README here)
        assert entry.top1 is None or entry.reference == cat.DEIT_README
    else:  # an original-release entry linked to timm's copy of the same file
        assert cfg.url == https_of(entry.uri)
        assert cfg.input_size[-1] == entry.image_size and cfg.num_classes == entry.num_classes


def test_timm_configs_that_point_at_the_bucket_agree_with_the_augreg_entries():
    """Where timm downloads one of the README's recommended augreg files, the catalog links the two."""
    import timm
    from timm.models import get_pretrained_cfg

    by_url = {https_of(e.uri): e for e in CATALOG if e.source == "augreg"}
    for name in timm.list_pretrained("vit_*"):
        cfg = get_pretrained_cfg(name)
        if cfg.url in by_url:
            assert by_url[cfg.url].timm_name == name


def test_class_name_files():
    one, full = class_names("imagenet-1k"), class_names("imagenet-21k")
    assert len(one) == 1000 and len(full) == 21843
    ids = class_ids("imagenet-1k")
    assert ids == sorted(ids) and ids[0] == "n01440764" and one[0] == "tench, Tinca tinca"
    assert class_ids("imagenet-21k") == sorted(class_ids("imagenet-21k"))
    assert set(ids) - set(class_ids("imagenet-21k")) == {"n04399382"}  # "teddy, teddy bear": not in Google's 21k
    # torchvision names the same 1,000 outputs in the same order (its shorter names are part of ours, but two)
    import torchvision.models as tvm

    short = tvm.ViT_B_16_Weights.IMAGENET1K_V1.meta["categories"]
    differ = [i for i, (s, n) in enumerate(zip(short, one)) if s.lower() not in n.lower()]
    assert differ == [134, 639]  # "crane bird" / "crane", "maillot tank suit" / "maillot, tank suit"
    with pytest.raises(ValueError, match="unknown class list"):
        class_names("imagenet-22k")


def test_list_and_find():
    assert len(list_pretrained()) == len(CATALOG)
    tv = list_pretrained("tv-*")
    assert tv and all(e.source == "torchvision" for e in tv)
    assert {e.name for e in list_pretrained("b16-in21k")} >= {"vit-b16-in21k", "r50-vit-b16-in21k"}
    assert find_pretrained("google/vit-base-patch16-224").name == "hf-google-vit-base-patch16-224"
    assert find_pretrained("vit_base_patch16_224.augreg2_in21k_ft_in1k").source == "timm"
    assert find_pretrained("VIT-B16-IN21K").name == "vit-b16-in21k"
    assert find_pretrained("no-such-model") is None
    with pytest.raises(ValueError, match=r"did you mean vit-b16-in21k"):
        cat.get_pretrained("vit-b16-in21kk")


def test_class_lists_are_the_ones_timm_names_these_heads_with():
    """timm picks its label list by the head's size; for the Google in21k heads (21,843 outputs, the size its config
    and the catalog give) that is Google's ImageNet-21k synsets, in this order and with these names."""
    from timm.data import ImageNetInfo, infer_imagenet_subset
    from timm.models import get_pretrained_cfg

    for timm_name, key in (("vit_base_patch16_224.augreg_in21k", "imagenet-21k"),
                           ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "imagenet-1k")):
        cfg = get_pretrained_cfg(timm_name)
        assert cfg.num_classes == cat.CLASS_LISTS[key]
        info = ImageNetInfo(infer_imagenet_subset(cfg))
        assert info.label_names() == class_ids(key)
        assert info.label_descriptions() == class_names(key)
