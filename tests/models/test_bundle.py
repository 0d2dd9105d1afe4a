"""Tests of model bundles: float16 export and float32 restore, hashes, tampering, versions, the cache.

Two tiny real models are bundled: the package's 1-D ResNet ECG encoder (saved with
``save_pretrained``) and a diffusers ``UNet2DModel`` inside a pipeline-style folder
(``model_index.json``, ``unet/``, ``scheduler/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors import safe_open

import cardiacnets
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.models import create_model
from cardiacnets.models.bundle import (CACHE_MARKER, SUMS_NAME, default_requires, export_bundle, load_bundle,
                                       seal_bundle, verify_bundle)
from cardiacnets.models.pretrained import load_pretrained

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_RESNET = dict(n_samples=500, stem_width=8, widths=[8, 16], blocks=[1, 1], embed_dim=32)
UNET_FILE = "generator/unet/diffusion_pytorch_model.safetensors"


def _tiny_unet() -> UNet2DModel:
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Saved tiny models: ``encoder`` (ResNet1D, BatchNorm statistics perturbed) and ``generator`` (a pipeline)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("sources")
    encoder = create_model("ecg_resnet1d", **TINY_RESNET)
    with torch.no_grad():  # non-trivial running statistics, so buffers are checked too
        for module in encoder.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(7)
    encoder.eval().save_pretrained(root / "encoder")
    unet = _tiny_unet().eval()
    pipeline = root / "generator"
    unet.save_pretrained(pipeline / "unet")
    DDPMScheduler(num_train_timesteps=50).save_pretrained(pipeline / "scheduler")
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline",
                                                           "unet": ["diffusers", "UNet2DModel"],
                                                           "scheduler": ["diffusers", "DDPMScheduler"]}))
    return {"encoder": root / "encoder", "generator": pipeline, "models": {"encoder": encoder, "unet": unet}}


@pytest.fixture
def bundle(sources, tmp_path) -> Path:
    folders = {key: sources[key] for key in ("encoder", "generator")}
    return export_bundle(folders, tmp_path / "bundle", name="tiny-ref", metadata={"seed": 3, "command": "test"})


def _all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _flip_byte(path: Path, offset: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# --- export and load ----------------------------------------------------------------------------------------------
def test_half_export_restores_float32_weights_rounded_to_float16(sources, bundle, tmp_path):
    with safe_open(str(bundle / "encoder" / "model.safetensors"), framework="pt") as handle:
        stored = {name: handle.get_tensor(name).dtype for name in handle.keys()}
    assert stored["head.weight"] == torch.float16
    assert stored["stem.1.num_batches_tracked"] == torch.int64

    loaded = load_bundle(bundle, cache_dir=tmp_path / "cache")
    assert set(loaded.folders) == {"encoder", "generator"}
    encoder = load_pretrained(loaded.folders["encoder"]).eval()
    original = sources["models"]["encoder"]
    for (name, w), (_, w_loaded) in zip(original.state_dict().items(), encoder.state_dict().items()):
        if w.is_floating_point():
            assert w_loaded.dtype == torch.float32, name
            assert torch.equal(w_loaded, w.half().float()), name
        else:
            assert torch.equal(w_loaded, w), name
    ecg = torch.randn(2, 12, 500)
    with torch.no_grad():
        torch.testing.assert_close(encoder(ecg), original(ecg), atol=2e-2, rtol=2e-2)

    unet = UNet2DModel.from_pretrained(loaded.folders["generator"] / "unet").eval()
    original_unet = sources["models"]["unet"]
    for (name, w), (_, w_loaded) in zip(original_unet.state_dict().items(), unet.state_dict().items()):
        assert w_loaded.dtype == torch.float32 and torch.equal(w_loaded, w.half().float()), name
    sample, timestep = torch.randn(2, 1, 8, 8), torch.tensor([3, 20])
    with torch.no_grad():
        torch.testing.assert_close(unet(sample, timestep).sample, original_unet(sample, timestep).sample,
                                   atol=2e-2, rtol=2e-2)
    # Files other than weights are copied byte for byte; the scheduler loads.
    for rel in ("scheduler/scheduler_config.json", "model_index.json", "unet/config.json"):
        assert (loaded.folders["generator"] / rel).read_bytes() == (sources["generator"] / rel).read_bytes()
    assert DDPMScheduler.from_pretrained(loaded.folders["generator"] / "scheduler").config.num_train_timesteps == 50


def test_half_false_keeps_float32(sources, tmp_path):
    out = export_bundle({"encoder": sources["encoder"]}, tmp_path / "b", name="full", half=False)
    assert (out / "encoder/model.safetensors").read_bytes() == (sources["encoder"] / "model.safetensors").read_bytes()
    encoder = load_pretrained(load_bundle(out, cache_dir=tmp_path / "cache").folders["encoder"])
    for (name, w), (_, w_loaded) in zip(sources["models"]["encoder"].state_dict().items(),
                                        encoder.state_dict().items()):
        assert torch.equal(w_loaded, w), name
    assert json.loads((out / "bundle.json").read_text())["half"] is False


def test_bundle_json_lists_every_file_with_its_hash(sources, bundle):
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["bundle_format"] == 1 and info["name"] == "tiny-ref"
    assert info["package_version"] == cardiacnets.__version__
    major, minor = cardiacnets.__version__.split(".")[:2]
    assert info["requires"] == f">={major}.{minor},<{major}.{int(minor) + 1}"
    assert info["metadata"] == {"seed": 3, "command": "test"}
    assert info["components"] == {"encoder": "encoder", "generator": "generator"}
    assert info["created"].endswith("+00:00")
    on_disk = {rel: data for rel, data in _all_files(bundle).items() if rel not in ("bundle.json", SUMS_NAME)}
    assert set(info["files"]) == set(on_disk)
    assert {"encoder/model.safetensors", "encoder/config.json", UNET_FILE, "generator/unet/config.json",
            "generator/scheduler/scheduler_config.json", "generator/model_index.json"} == set(on_disk)
    for rel, data in on_disk.items():
        assert info["files"][rel] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    summary = verify_bundle(bundle)
    assert summary["name"] == "tiny-ref" and summary["files"] == len(on_disk) + 2
    assert summary["bytes"] == sum(len(d) for d in _all_files(bundle).values())
    assert summary["sha256"] == hashlib.sha256((bundle / "bundle.json").read_bytes()).hexdigest()


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="sha256sum not installed")
def test_sha256sums_checks_with_sha256sum_including_a_model_card(bundle, tmp_path):
    (bundle / "MODEL_CARD.md").write_text("# Model card\n")
    with pytest.raises(InputError, match="MODEL_CARD.md.*not listed in bundle.json"):
        verify_bundle(bundle)
    digest = seal_bundle(bundle)
    assert "MODEL_CARD.md" in json.loads((bundle / "bundle.json").read_text())["files"]
    result = subprocess.run(["sha256sum", "--strict", "-c", SUMS_NAME], cwd=bundle, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bundle.json: OK" in result.stdout and "MODEL_CARD.md: OK" in result.stdout
    assert load_bundle(bundle, cache_dir=tmp_path / "cache").digest == digest


# --- refusals at load -------------------------------------------------------------------------------------------
def test_a_modified_byte_is_named(bundle, tmp_path):
    _flip_byte(bundle / UNET_FILE)
    with pytest.raises(InputError, match="modified since the bundle was sealed") as err:
        load_bundle(bundle, cache_dir=tmp_path / "cache")
    assert err.value.path == str((bundle / UNET_FILE).resolve())
    assert not (tmp_path / "cache").exists()


def test_an_added_or_deleted_file_is_named(bundle):
    (bundle / "generator" / "notes.txt").write_text("added")
    with pytest.raises(InputError, match="not listed in bundle.json") as err:
        verify_bundle(bundle)
    assert err.value.path == str(bundle / "generator" / "notes.txt")
    (bundle / "generator" / "notes.txt").unlink()
    (bundle / "encoder" / "config.json").unlink()
    with pytest.raises(InputError, match="listed in bundle.json but missing") as err:
        verify_bundle(bundle)
    assert err.value.path == str(bundle / "encoder" / "config.json")


def test_bundle_json_and_sums_edits_are_refused(bundle):
    info_path = bundle / "bundle.json"
    original = info_path.read_text()
    info_path.write_text(original.replace('"seed": 3', '"seed": 4'))
    with pytest.raises(InputError, match="SHA256SUMS.*does not match bundle.json"):
        verify_bundle(bundle)
    info_path.write_text("{not json")
    with pytest.raises(InputError, match="bundle.json: invalid JSON"):
        verify_bundle(bundle)
    info = json.loads(original)
    del info["files"]
    info_path.write_text(json.dumps(info))
    with pytest.raises(InputError, match="missing field.*files"):
        verify_bundle(bundle)
    info_path.write_text(json.dumps({**json.loads(original), "bundle_format": 2}))
    with pytest.raises(InputError, match="bundle format 2 is newer"):
        verify_bundle(bundle)
    info_path.write_text(json.dumps({**json.loads(original), "files": {"../outside": {"sha256": "0" * 64,
                                                                                      "bytes": 1}}}))
    with pytest.raises(InputError, match="inside the bundle"):
        verify_bundle(bundle)
    info_path.unlink()
    with pytest.raises(InputError, match="not a cardiacnets bundle"):
        verify_bundle(bundle)


def test_a_package_version_outside_requires_is_refused(bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(cardiacnets, "__version__", "99.0.0")
    with pytest.raises(InputError) as err:
        load_bundle(bundle, cache_dir=tmp_path / "cache")
    message = str(err.value)
    built = json.loads((bundle / "bundle.json").read_text())["package_version"]
    assert f"built for cardiacnets {built}" in message and "cardiacnets 99.0.0 is installed" in message
    assert "cardiacnets reference build" in message and "matching" in message


def test_requires_written_at_export_is_enforced(sources, tmp_path):
    out = export_bundle({"encoder": sources["encoder"]}, tmp_path / "b", name="future", requires=">=9.0")
    with pytest.raises(InputError, match=r"loads with cardiacnets>=9.0"):
        verify_bundle(out)
    assert default_requires("0.4.2") == ">=0.4,<0.5" and default_requires("1.2") == ">=1.2,<1.3"


# --- refusals at export -----------------------------------------------------------------------------------------
def test_pickle_weights_are_refused(sources, tmp_path):
    source = tmp_path / "legacy"
    shutil.copytree(sources["encoder"], source)
    torch.save(sources["models"]["encoder"].state_dict(), source / "pytorch_model.bin")
    out = tmp_path / "b"
    with pytest.raises(InputError, match="pickle-based weight file") as err:
        export_bundle({"encoder": source}, out, name="x")
    assert err.value.path == str(source / "pytorch_model.bin")
    assert not out.exists() and list(tmp_path.iterdir()) == [source]


def test_a_tensor_beyond_float16_range_is_refused(sources, tmp_path):
    model = create_model("ecg_resnet1d", **TINY_RESNET)
    with torch.no_grad():
        model.head.bias[3] = 1.0e6
        model.head.bias[4] = float("inf")  # infinities survive the conversion and are not the problem
    model.save_pretrained(tmp_path / "big")
    out = tmp_path / "b"
    with pytest.raises(InputError, match=r"'head.bias' has values up to 1e\+06, beyond float16") as err:
        export_bundle({"encoder": tmp_path / "big"}, out, name="x")
    assert err.value.path == str(tmp_path / "big" / "model.safetensors")
    assert not out.exists()
    export_bundle({"encoder": tmp_path / "big"}, out, name="x", half=False)
    assert load_pretrained(load_bundle(out, cache_dir=tmp_path / "c").folders["encoder"]).head.bias[3] == 1.0e6


def test_export_needs_an_empty_folder_and_valid_names(sources, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InputError, match="not an empty folder"):
        export_bundle({"encoder": sources["encoder"]}, tmp_path / "full", name="x")
    (tmp_path / "empty").mkdir()
    assert (export_bundle({"encoder": sources["encoder"]}, tmp_path / "empty", name="x") / "bundle.json").is_file()
    with pytest.raises(ConfigError, match="component key"):
        export_bundle({"../up": sources["encoder"]}, tmp_path / "b1", name="x")
    with pytest.raises(InputError, match="no such model folder"):
        export_bundle({"encoder": tmp_path / "nope"}, tmp_path / "b2", name="x")


# --- the cache ----------------------------------------------------------------------------------------------------
def test_a_read_only_bundle_loads_and_is_not_written(bundle, tmp_path):
    before = {rel: data for rel, data in _all_files(bundle).items()}
    paths = [bundle, *bundle.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    try:
        for p in paths:
            p.chmod(stat.S_IMODE(modes[p]) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        loaded = load_bundle(bundle, cache_dir=tmp_path / "cache")
        assert loaded.path == bundle.resolve() and loaded.root.parent == tmp_path / "cache" / "bundles"
        assert _all_files(bundle) == before
    finally:
        for p in reversed(paths):
            p.chmod(stat.S_IMODE(modes[p]))


def test_second_load_reuses_the_cache(bundle, tmp_path):
    first = load_bundle(bundle, cache_dir=tmp_path / "cache")
    assert first.root.name == f"tiny-ref-{first.digest[:16]}"
    stamps = {p: p.stat().st_mtime_ns for p in first.root.rglob("*")}
    second = load_bundle(bundle, cache_dir=tmp_path / "cache")
    assert second.root == first.root and second.folders == first.folders
    assert {p: p.stat().st_mtime_ns for p in second.root.rglob("*")} == stamps
    assert sorted(p.name for p in (tmp_path / "cache" / "bundles").iterdir()) == [first.root.name]
    assert not (first.root / SUMS_NAME).exists() and (first.root / CACHE_MARKER).is_file()


@pytest.mark.parametrize("damage", ["delete", "flip"])
def test_a_damaged_cache_is_rebuilt(bundle, tmp_path, damage):
    loaded = load_bundle(bundle, cache_dir=tmp_path / "cache")
    weights = loaded.folders["generator"] / "unet" / "diffusion_pytorch_model.safetensors"
    good = weights.read_bytes()
    if damage == "delete":
        weights.unlink()
    else:
        _flip_byte(weights)
    again = load_bundle(bundle, cache_dir=tmp_path / "cache")
    assert again.root == loaded.root and weights.read_bytes() == good
    assert sorted(p.name for p in (tmp_path / "cache" / "bundles").iterdir()) == [loaded.root.name]


def test_concurrent_loaders_agree_on_one_complete_copy(bundle, tmp_path):
    results, errors = [], []

    def load():
        try:
            results.append(load_bundle(bundle, cache_dir=tmp_path / "cache").root)
        except Exception as err:  # noqa: BLE001  (reported by the assertion below)
            errors.append(err)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert sorted(p.name for p in (tmp_path / "cache" / "bundles").iterdir()) == [results[0].name]
    load_pretrained(results[0] / "encoder")


def test_default_cache_location(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("CARDIACNETS_CACHE", str(tmp_path / "env-cache"))
    assert load_bundle(bundle).root.parent == tmp_path / "env-cache" / "bundles"
    monkeypatch.delenv("CARDIACNETS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load_bundle(bundle).root.parent == tmp_path / "xdg" / "cardiacnets" / "bundles"
    assert os.listdir(tmp_path / "xdg" / "cardiacnets" / "bundles")
