"""Downloading published weights: every URI route against real local servers (a bucket-like static host, a
torchvision-like host and a Hugging Face-like hub reached through HF_ENDPOINT), the cache (a second load with the
servers stopped), and each bad case as a one-line DownloadError with nothing half-written left in the cache."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.errors import DownloadError
from vitkit.hub import cache_dir, download_hf, download_url, is_uri, parse_uri, resolve_uri, url_cache_path
from vitkit.hub.uri import HubRepo, fetch_url

from conftest import randomize_, rel_err
from hub_servers import HubServer, StaticServer, free_port, isolate_hub_env

GCS_NPZ = "/vit_models/imagenet21k/ViT-B_16.npz"
AUGREG_NPZ = ("/vit_models/augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-"
              "lr_0.03-res_224.npz")
TV_PTH = "/models/vit_b_16-c867db91.pth"
GITHUB_ST = "/huggingface/pytorch-image-models/releases/download/v0.1-tiny/vit_tiny.safetensors"


@pytest.fixture(autouse=True)
def hub_env(tmp_path, monkeypatch):
    isolate_hub_env(tmp_path, monkeypatch, cache="vitkit-cache")
    return tmp_path


def _tiny(seed: int, **overrides):
    args = dict(num_classes=5, image_size=32, patch_size=8, width=48, depth=1, num_heads=3, mlp_dim=96)
    args.update(overrides)
    return randomize_(vitkit.create_model("ViT-Ti/16", **args), seed=seed).eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Small real checkpoints in each format, as bytes (files) or file dicts (repositories), with their models."""
    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    google = _tiny(1, gelu="tanh", representation_size=48)
    vitkit.save(google, root / "g.npz", format="google")
    out["npz"] = (google, (root / "g.npz").read_bytes())
    timm_model = _tiny(2)
    vitkit.save(timm_model, root / "t.safetensors", format="timm")
    out["safetensors"] = (timm_model, (root / "t.safetensors").read_bytes())
    vitkit.save(timm_model, root / "t.pth", format="timm")  # a timm-layout state dict, as a .pth
    out["pth"] = (timm_model, (root / "t.pth").read_bytes())
    hf_model = _tiny(3)
    vitkit.save(hf_model, root / "hf", format="hf")
    out["hf"] = (hf_model, {p.name: p.read_bytes() for p in (root / "hf").iterdir()})
    return out


def _same_logits(model, path, **hints):
    loaded = vitkit.load(path, **hints)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert rel_err(loaded(x), model(x)) <= 1e-6


@pytest.fixture
def static(monkeypatch, checkpoints):
    """One static host standing in for the GCS bucket, torchvision's host and GitHub's release downloads."""
    server = StaticServer().start()
    server.add(GCS_NPZ, checkpoints["npz"][1])
    server.add(AUGREG_NPZ, checkpoints["npz"][1])
    server.add(TV_PTH, checkpoints["pth"][1])
    server.add(GITHUB_ST, checkpoints["safetensors"][1])
    for variable in ("VITKIT_GCS_URL", "VITKIT_TORCHVISION_URL", "VITKIT_GITHUB_URL"):
        monkeypatch.setenv(variable, server.url)
    yield server
    server.stop()


@pytest.fixture
def hub(monkeypatch):
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.stop()


def _leftovers(root: Path) -> list[str]:
    """Files under a cache that are neither a complete download nor its lock/hash sidecar."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and (p.name.endswith((".part", ".tmp")) or ".vitkit-write-test" in p.name))


def _final(url: str) -> Path:
    return url_cache_path(url)


def _assert_nothing_cached(url: str):
    final = _final(url)
    assert not final.exists(), final
    assert not final.with_name(final.name + ".part").exists()
    assert _leftovers(cache_dir()) == [] if cache_dir().exists() else True


def _one_line_error(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message, message
    assert isinstance(excinfo.value, OSError)  # the CLI prints OSErrors as one line with exit code 2
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ------------------------------------------------------------------------------------------------------ URIs
def test_uri_parsing_and_mirror_table(monkeypatch):
    assert is_uri("hf-hub:google/vit-base-patch16-224") and is_uri("hf://google/vit-base-patch16-224")
    assert is_uri("gs://vit_models/imagenet21k/ViT-B_16.npz") and is_uri("https://x.org/a.npz")
    assert not is_uri("ViT-B_16.npz") and not is_uri("/tmp/x.npz") and not is_uri(Path("hf-hub:x/y"))
    assert parse_uri("hf-hub:google/vit-base-patch16-224@v1.0") == HubRepo("google/vit-base-patch16-224", "v1.0")
    assert parse_uri("hf://timm/vit_base_patch16_224.augreg2_in21k_ft_in1k") == \
        HubRepo("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", None)
    assert parse_uri("gs://vit_models/imagenet21k/ViT-B_16.npz") == \
        "https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz"
    for bad in ("hf-hub:google", "hf-hub:google/vit@", "hf://google/vit/model.safetensors", "gs://bucket-only",
                "ftp://x.org/a"):
        with pytest.raises(DownloadError) as excinfo:
            parse_uri(bad)
        _one_line_error(excinfo, bad)
    url = "https://download.pytorch.org/models/vit_b_16-c867db91.pth"
    assert fetch_url(url) == url
    monkeypatch.setenv("VITKIT_TORCHVISION_URL", "http://mirror.local:8080/pytorch/")
    assert fetch_url(url) == "http://mirror.local:8080/pytorch/models/vit_b_16-c867db91.pth"
    assert fetch_url("https://storage.googleapis.com/vit_models/a.npz") == \
        "https://storage.googleapis.com/vit_models/a.npz"
    # the cache entry is named by the canonical URL, whichever mirror served it
    assert url_cache_path(url) == cache_dir() / "urls" / "download.pytorch.org" / "models" / "vit_b_16-c867db91.pth"


def test_cache_dir_defaults(monkeypatch, tmp_path):
    assert cache_dir() == tmp_path / "vitkit-cache"
    monkeypatch.delenv("VITKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert cache_dir() == tmp_path / "xdg" / "vitkit"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert cache_dir() == Path.home() / ".cache" / "vitkit"


# ---------------------------------------------------------------------------------------------- every route
@pytest.mark.parametrize("uri, kind", [
    ("gs://vit_models/imagenet21k/ViT-B_16.npz", "npz"),
    ("https://storage.googleapis.com" + AUGREG_NPZ, "npz"),
    ("https://download.pytorch.org" + TV_PTH, "pth"),
    ("https://github.com" + GITHUB_ST, "safetensors"),
], ids=["gs", "gcs-https", "torchvision-host", "github-release"])
def test_url_routes_load_then_come_from_the_cache_with_the_server_stopped(static, checkpoints, uri, kind):
    model, data = checkpoints[kind]
    path = resolve_uri(uri, progress=False)
    assert path.read_bytes() == data
    hints = {"num_heads": 3} if kind == "pth" else {}  # a bare .pth records no head count
    _same_logits(model, path, **hints)
    served = static.requests[:]
    assert len(served) == 1 and served[0][0] == "GET"
    static.stop()
    assert resolve_uri(uri, sha256=hashlib.sha256(data).hexdigest()) == path  # checked against the sidecar
    _same_logits(model, path, **hints)
    sidecar = path.with_name(path.name + ".sha256")
    assert sidecar.read_text().split()[0] == hashlib.sha256(data).hexdigest()
    assert _leftovers(cache_dir()) == []


def _hf_repo_files(checkpoints):
    files = dict(checkpoints["hf"][1])
    files.update({"README.md": b"# model card\n", "tf_model.h5": b"\0" * 300, "flax_model.msgpack": b"\1" * 300,
                  ".gitattributes": b"*.safetensors filter=lfs\n"})
    return files


def test_hf_hub_transformers_repository_loads_and_then_comes_from_the_cache(hub, checkpoints):
    model, _ = checkpoints["hf"]
    commit = hub.add_repo("google/vit-tiny-test", _hf_repo_files(checkpoints))
    path = resolve_uri("hf-hub:google/vit-tiny-test")
    assert path.is_dir() and path.name == commit
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    _same_logits(model, path)
    fetched = {p.rsplit("/", 1)[-1] for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p}
    assert fetched == {"config.json", "preprocessor_config.json"}  # weights come from the CDN; decoys never
    assert len(hub.cdn.requests) == 1
    hub.stop()
    assert resolve_uri("hf-hub:google/vit-tiny-test") == path
    assert resolve_uri(f"hf://google/vit-tiny-test@{commit}") == path
    _same_logits(model, path)


def test_hf_hub_revisions_timm_layout_and_pytorch_fallback(hub, checkpoints, monkeypatch):
    hf_model, hf_files = checkpoints["hf"]
    timm_model, timm_st = checkpoints["safetensors"]
    # a timm repository: its config.json names timm's architecture (here with the model_args of this tiny copy),
    # which settles what the weights cannot, so the folder is what vitkit reads
    config = {"architecture": "vit_tiny_patch16_224", "num_classes": 5,
              "model_args": {"embed_dim": 48, "num_heads": 3, "depth": 1, "img_size": 32, "patch_size": 8}}
    hub.add_repo("timm/vit_tiny_patch8_32.test", {"config.json": json.dumps(config).encode(),
                                                  "model.safetensors": timm_st, "pytorch_model.bin": b"\0" * 500})
    path = resolve_uri("hf-hub:timm/vit_tiny_patch8_32.test")
    assert path.is_dir() and (path / "model.safetensors").is_file()
    _same_logits(timm_model, path)
    assert not (path / "pytorch_model.bin").exists()
    # a repository with PyTorch weights only, and a tag that points at another commit
    from safetensors.torch import load

    buffer = io.BytesIO()
    torch.save(load(hf_files["model.safetensors"]), buffer)
    bin_files = {"config.json": hf_files["config.json"], "pytorch_model.bin": buffer.getvalue(),
                 "tf_model.h5": b"\0" * 100}
    hub.add_repo("facebook/vit-bin-only", bin_files)
    other = _tiny(9)
    vitkit.save(other, Path(os.environ["VITKIT_CACHE"]).parent / "other", format="hf")
    tagged = hub.add_repo("facebook/vit-bin-only", {p.name: p.read_bytes() for p in
                                                    (Path(os.environ["VITKIT_CACHE"]).parent / "other").iterdir()},
                          revision="v2")
    path = resolve_uri("hf-hub:facebook/vit-bin-only")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "pytorch_model.bin"]
    _same_logits(hf_model, path)
    path_v2 = resolve_uri("hf-hub:facebook/vit-bin-only@v2")
    assert path_v2.name == tagged
    _same_logits(other, path_v2)
    # offline switches serve the cache without a request
    before = len(hub.requests)
    monkeypatch.setenv("VITKIT_OFFLINE", "1")
    assert resolve_uri("hf-hub:facebook/vit-bin-only@v2") == path_v2
    assert len(hub.requests) == before


def test_hf_hub_resumes_a_dropped_cdn_transfer_and_checks_sha256(hub, checkpoints):
    model, files = checkpoints["hf"]
    hub.add_repo("google/vit-drop", files)
    weights = files["model.safetensors"]
    hub.cdn.fault(hub.blob_path(weights), "drop")
    right = hashlib.sha256(weights).hexdigest()
    path = download_hf("google/vit-drop", sha256=right)
    _same_logits(model, path)
    assert hub.cdn.count(hub.blob_path(weights)) == 2
    # the wrong hash: one line with both hashes, and the file is gone from the cache
    wrong = "0" * 64
    with pytest.raises(DownloadError) as excinfo:
        resolve_uri("hf-hub:google/vit-drop", sha256=wrong)
    _one_line_error(excinfo, "hf-hub:google/vit-drop", right, wrong)
    assert not (path / "model.safetensors").exists()
    assert resolve_uri("hf-hub:google/vit-drop", sha256=right) == path  # fetched again, right this time


def test_hf_hub_private_repository_needs_hf_token(hub, checkpoints, monkeypatch):
    model, files = checkpoints["hf"]
    hub.add_repo("acme/private-vit", files, token="hf_local_test_token")
    with pytest.raises(DownloadError) as excinfo:
        resolve_uri("hf-hub:acme/private-vit")
    _one_line_error(excinfo, "hf-hub:acme/private-vit", "no such repository", "HTTP 401", "HF_TOKEN")
    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")  # read by huggingface_hub at each call
    _same_logits(model, resolve_uri("hf-hub:acme/private-vit"))
    assert hub.authorizations[-1] == "Bearer hf_local_test_token"


def test_hf_hub_bad_cases(hub, checkpoints, monkeypatch):
    hub.add_repo("google/vit-tiny-test", checkpoints["hf"][1])
    with pytest.raises(DownloadError) as excinfo:
        resolve_uri("hf-hub:google/no-such-repo")
    _one_line_error(excinfo, "hf-hub:google/no-such-repo", "no such repository", hub.url)
    with pytest.raises(DownloadError) as excinfo:
        resolve_uri("hf-hub:google/vit-tiny-test@no-such-branch")
    _one_line_error(excinfo, "hf-hub:google/vit-tiny-test@no-such-branch", "no revision 'no-such-branch'")
    hub.add_repo("google/no-weights", {"config.json": b"{}", "README.md": b"hello"})
    with pytest.raises(DownloadError) as excinfo:
        resolve_uri("hf-hub:google/no-weights")
    _one_line_error(excinfo, "no weights")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as excinfo:
        resolve_uri("hf-hub:google/vit-tiny-test")
    _one_line_error(excinfo, "hf-hub:google/vit-tiny-test", "offline", "vitkit download hf-hub:google/vit-tiny-test",
                    "HF_HUB_CACHE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DownloadError) as excinfo:
        resolve_uri("hf-hub:google/vit-tiny-test")
    _one_line_error(excinfo, "hf-hub:google/vit-tiny-test", "cannot reach http://127.0.0.1:")


# ---------------------------------------------------------------------------------------------- bad cases
GCS_URL = "https://storage.googleapis.com" + GCS_NPZ


def test_404_is_one_line_and_leaves_nothing(static):
    with pytest.raises(DownloadError) as excinfo:
        download_url("https://storage.googleapis.com/vit_models/imagenet21k/ViT-X_99.npz", progress=False)
    _one_line_error(excinfo, f"{static.url}/vit_models/imagenet21k/ViT-X_99.npz", "not found (HTTP 404)",
                    "mirror of https://storage.googleapis.com/vit_models/imagenet21k/ViT-X_99.npz")
    _assert_nothing_cached("https://storage.googleapis.com/vit_models/imagenet21k/ViT-X_99.npz")
    assert len(static.requests) == 1  # a 404 is not retried


def test_connection_refused_is_retried_then_one_line(monkeypatch):
    port = free_port()
    monkeypatch.setenv("VITKIT_GCS_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError) as excinfo:
        resolve_uri("gs://vit_models/imagenet21k/ViT-B_16.npz", progress=False)
    _one_line_error(excinfo, f"http://127.0.0.1:{port}{GCS_NPZ}", "connection refused", "after 4 tries")
    _assert_nothing_cached(GCS_URL)


def test_server_errors_are_retried_with_backoff(static, checkpoints):
    static.fault(GCS_NPZ, "500", "503")
    path = download_url(GCS_URL, progress=False)
    assert path.read_bytes() == checkpoints["npz"][1] and static.count(GCS_NPZ) == 3
    static.fault(AUGREG_NPZ, "500", "500", "500", "500", "500")
    url = "https://storage.googleapis.com" + AUGREG_NPZ
    with pytest.raises(DownloadError) as excinfo:
        download_url(url, progress=False)
    _one_line_error(excinfo, "HTTP 500", "after 4 tries")
    assert static.count(AUGREG_NPZ) == 4
    _assert_nothing_cached(url)


def test_a_dropped_transfer_is_resumed_with_a_range_request(static, checkpoints):
    model, data = checkpoints["npz"]
    static.fault(GCS_NPZ, "drop")
    path = download_url(GCS_URL, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert path.read_bytes() == data
    ranges = [r for m, p, r in static.requests if p == GCS_NPZ]
    assert ranges == [None, f"bytes={len(data) // 2}-"]
    _same_logits(model, path)
    assert _leftovers(cache_dir()) == []


def test_drops_that_make_progress_do_not_use_up_the_tries(static, checkpoints):
    data = checkpoints["npz"][1]
    static.fault(GCS_NPZ, *["drop"] * 6)  # each drop sends half of what is left: progress every time
    path = download_url(GCS_URL, progress=False)
    assert path.read_bytes() == data and static.count(GCS_NPZ) == 7


def test_a_server_that_ignores_range_gets_the_whole_file_again(static, checkpoints):
    data = checkpoints["npz"][1]
    static.mode(GCS_NPZ, "no-range")
    static.fault(GCS_NPZ, "drop")
    path = download_url(GCS_URL, progress=False)
    assert path.read_bytes() == data and static.count(GCS_NPZ) == 2


def test_a_cut_that_cannot_be_finished_names_the_url_and_the_next_run_resumes(static, checkpoints, monkeypatch):
    data = checkpoints["npz"][1]
    static.fault(GCS_NPZ, "drop", "500", "500", "500", "500")
    with pytest.raises(DownloadError) as excinfo:
        download_url(GCS_URL, progress=False)
    part = _final(GCS_URL).with_name(_final(GCS_URL).name + ".part")
    _one_line_error(excinfo, static.url + GCS_NPZ, "HTTP 500", "kept: run again to resume")
    assert part.stat().st_size == len(data) // 2 and not _final(GCS_URL).exists()
    path = download_url(GCS_URL, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert path.read_bytes() == data and not part.exists()
    assert static.requests[-1][2] == f"bytes={len(data) // 2}-"
    # a server without Range support: nothing is kept, since nothing could be resumed
    static.mode(AUGREG_NPZ, "no-range")
    static.fault(AUGREG_NPZ, "drop", "500", "500", "500", "500")
    url = "https://storage.googleapis.com" + AUGREG_NPZ
    with pytest.raises(DownloadError) as excinfo:
        download_url(url, progress=False)
    _one_line_error(excinfo, "cannot resume, so the partial file was removed")
    _assert_nothing_cached(url)


@pytest.mark.parametrize("fault, fragment", [("html", "(HTTP 200, Content-Type text/html)"),
                                             ("html-as-binary", "labelled application/octet-stream but starting "
                                                                "with an HTML tag")])
def test_an_html_page_with_status_200_is_refused(static, fault, fragment):
    static.fault(GCS_NPZ, fault)
    with pytest.raises(DownloadError) as excinfo:
        download_url(GCS_URL, progress=False)
    _one_line_error(excinfo, static.url + GCS_NPZ, "HTML page", fragment)
    _assert_nothing_cached(GCS_URL)


def test_a_wrong_sha256_discards_the_file_and_shows_both_hashes(static, checkpoints):
    data = checkpoints["npz"][1]
    right = hashlib.sha256(data).hexdigest()
    static.fault(GCS_NPZ, "wrong")
    with pytest.raises(DownloadError) as excinfo:
        download_url(GCS_URL, sha256=right.upper(), progress=False)
    served = hashlib.sha256(bytes(255 - b for b in data[:64]) + data[64:]).hexdigest()
    _one_line_error(excinfo, "SHA-256 mismatch", f"expected {right}", f"got {served}", "discarded")
    _assert_nothing_cached(GCS_URL)
    # a cached file is checked against the hash asked for; a mismatch fetches it again
    download_url(GCS_URL, progress=False)
    assert static.count(GCS_NPZ) == 2
    with pytest.raises(DownloadError) as excinfo:
        download_url(GCS_URL, sha256="ab" * 32, progress=False)
    _one_line_error(excinfo, f"expected {'ab' * 32}", f"got {right}")
    assert static.count(GCS_NPZ) == 3
    _assert_nothing_cached(GCS_URL)
    with pytest.raises(DownloadError) as excinfo:
        download_url(GCS_URL, sha256="xyz", progress=False)
    _one_line_error(excinfo, "not a SHA-256")


def test_offline_serves_the_cache_and_explains_what_is_missing(static, checkpoints, monkeypatch):
    path = download_url(GCS_URL, progress=False)
    monkeypatch.setenv("VITKIT_OFFLINE", "1")
    assert download_url(GCS_URL, sha256=hashlib.sha256(checkpoints["npz"][1]).hexdigest()) == path
    url = "https://storage.googleapis.com" + AUGREG_NPZ
    with pytest.raises(DownloadError) as excinfo:
        resolve_uri(url)
    _one_line_error(excinfo, url, "offline", "VITKIT_OFFLINE=1", "vitkit download", "VITKIT_CACHE",
                    str(cache_dir()))
    assert static.count(GCS_NPZ) == 1 and static.count(AUGREG_NPZ) == 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to fill a disk for real")
def test_a_full_disk_removes_the_partial_file(static, checkpoints):
    """The .part file is a link to /dev/full, where every write fails with ENOSPC, as on a full disk."""
    final = _final(GCS_URL)
    final.parent.mkdir(parents=True)
    part = final.with_name(final.name + ".part")
    part.symlink_to("/dev/full")
    with pytest.raises(DownloadError) as excinfo:
        download_url(GCS_URL, progress=False)
    _one_line_error(excinfo, static.url + GCS_NPZ, "no space left", "VITKIT_CACHE")
    assert not part.exists() and not part.is_symlink() and not final.exists()


def _make_read_only(folder: Path):
    """Make a folder unwritable even for root (the immutable attribute), or by its mode for other users."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root on a filesystem without the immutable attribute: cannot make a folder read-only")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_cache_is_named_and_still_serves_its_files(static, checkpoints):
    path = download_url(GCS_URL, progress=False)
    root = cache_dir()
    undo = [_make_read_only(p) for p in [root, *[d for d in root.rglob("*") if d.is_dir()]]]
    try:
        assert download_url(GCS_URL, sha256=hashlib.sha256(checkpoints["npz"][1]).hexdigest()) == path
        url = "https://storage.googleapis.com" + AUGREG_NPZ
        with pytest.raises(DownloadError) as excinfo:
            download_url(url, progress=False)
        _one_line_error(excinfo, url, "cannot write to the cache folder", "VITKIT_CACHE")
    finally:
        for restore in undo:
            restore()
    assert static.count(AUGREG_NPZ) == 0
    assert _leftovers(root) == []


def test_two_processes_fetching_one_file_download_it_once(static, checkpoints):
    """Two real processes ask for the same URL: the first holds the lock while the server holds its body back, the
    second says it is waiting; once the body is sent, the second finds the file cached. One request in all."""
    data = checkpoints["npz"][1]
    static.mode(GCS_NPZ, "gated")
    # vitkit.hub needs no torch: the package's __init__ (which imports torch, seconds on a busy machine) is skipped
    # by registering the bare package first, so each process starts in well under a second
    script = ("import sys, types, hashlib; pkg = types.ModuleType('vitkit'); pkg.__path__ = [sys.argv[2]]; "
              "sys.modules['vitkit'] = pkg; from vitkit.hub import resolve_uri; "
              "p = resolve_uri(sys.argv[1]); print(hashlib.sha256(p.read_bytes()).hexdigest()); "
              "assert 'torch' not in sys.modules")
    package = str(Path(vitkit.__file__).parent)

    def start():
        return subprocess.Popen([sys.executable, "-c", script, "gs://vit_models/imagenet21k/ViT-B_16.npz", package],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start()
    try:
        for _ in range(6000):  # the first process has the lock once its request reaches the server
            if static.count(GCS_NPZ) or first.poll() is not None:
                break
            time.sleep(0.01)
        assert static.count(GCS_NPZ) == 1, first.communicate(timeout=60)
        second = start()
        line = second.stderr.readline()  # blocks until the second process prints that it waits for the lock
        assert "waiting for another process downloading ViT-B_16.npz" in line, line + second.stderr.read()
    finally:
        static.gate.set()
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    for p, (out, err) in zip((first, second), outputs):
        assert p.returncode == 0, err
        assert out.strip() == hashlib.sha256(data).hexdigest()
    assert static.count(GCS_NPZ) == 1
    assert _final(GCS_URL).read_bytes() == data and _leftovers(cache_dir()) == []
