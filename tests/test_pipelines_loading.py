"""Model specs, devices, the offline failure and the safety checker switch."""

from __future__ import annotations

import json
import socket
import os
from pathlib import Path

import pytest
import torch

from pipelines import loading
from pipelines.loading import ModelLoadError, classify_spec, dtype_for, load_model, resolve_device


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_unavailable_or_unknown_device_is_one_sentence(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="cuda"):
        resolve_device("cuda")
    with pytest.raises(ModelLoadError, match="Unknown device"):
        resolve_device("tpu")


def test_half_precision_only_on_cuda() -> None:
    assert dtype_for(torch.device("cuda")) == torch.float16
    assert dtype_for(torch.device("cpu")) == torch.float32
    assert dtype_for(torch.device("mps")) == torch.float32


def test_specs_are_classified(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model_index.json").write_text("{}")
    (tmp_path / "weights.safetensors").write_bytes(b"")
    assert classify_spec(str(tmp_path / "model")) == ("folder", str(tmp_path / "model"))
    assert classify_spec(str(tmp_path / "weights.safetensors"))[0] == "file"
    assert classify_spec("stabilityai/sd-turbo") == ("hub", "stabilityai/sd-turbo")
    (tmp_path / "empty").mkdir()
    for bad, message in [(tmp_path / "empty", "model_index.json"), (tmp_path / "missing.safetensors", "does not"),
                         (tmp_path / "old.ckpt", "only .safetensors"), ("./nowhere", "not found"),
                         ("not a/valid id!", "not found")]:
        with pytest.raises(ModelLoadError, match=message):
            classify_spec(str(bad))


def test_offline_uncached_hub_id_fails_fast_with_one_clear_sentence(monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError(f"offline, yet a connection was attempted: {args}")

    # fast because nothing is tried: no probe, no download, no retries
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ModelLoadError) as caught:
        load_model("made-up-owner/no-such-model-3141", device="cpu")
    message = str(caught.value)
    assert "\n" not in message and "local" in message and "connect" in message
    assert "made-up-owner/no-such-model-3141" in message


def test_unreachable_hub_counts_as_offline(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    probes = []
    connect = socket.create_connection

    def probe(address, timeout=None, *args, **kwargs):
        probes.append((address, timeout))
        return connect(address, timeout, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", probe)
    assert loading.hub_is_offline()
    assert probes == [(("127.0.0.1", 9), loading.HUB_PROBE_SECONDS)]  # one probe, bounded by its timeout


def test_a_folder_loads_through_from_pretrained(tiny_model, tiny_model_dir: Path) -> None:
    assert tiny_model.name == "tiny"
    assert type(tiny_model.pipe).__name__ == "StableDiffusionPipeline"
    assert tiny_model.device == torch.device("cpu") and tiny_model.dtype == torch.float32
    assert tiny_model.pipe.safety_checker is None
    assert tiny_model.pipe._progress_bar_config == {"disable": True}
    assert loading.model_name(str(tiny_model_dir.parent / "other-model"), "folder") == "other-model"


def test_tiny_alias_and_default_use_the_cached_tiny_model(tiny_model_dir: Path, monkeypatch, tmp_path) -> None:
    missing = {"scenes": tmp_path / "no-scenes", "shapes64": tmp_path / "no-shapes"}
    monkeypatch.setattr(loading, "BUNDLED_MODELS", missing)
    assert Path(loading.default_model_spec()) == tiny_model_dir
    with pytest.raises(loading.ModelLoadError, match="'scenes' is not in this checkout"):
        loading.bundled_folder("scenes")


def test_the_first_bundled_model_present_is_the_default(monkeypatch, tmp_path) -> None:
    folders = {"scenes": tmp_path / "scenes", "shapes64": tmp_path / "shapes64"}
    monkeypatch.setattr(loading, "BUNDLED_MODELS", folders)
    folders["shapes64"].mkdir()
    (folders["shapes64"] / "model_index.json").write_text("{}")
    assert loading.default_model_spec() == str(folders["shapes64"])  # a checkout without the scenes weights
    folders["scenes"].mkdir()
    (folders["scenes"] / "model_index.json").write_text("{}")
    assert loading.bundled_present() == ["scenes", "shapes64"]
    assert loading.default_model_spec() == str(folders["scenes"])
    assert loading.model_name(str(folders["scenes"]), "folder") == "bundled:scenes"
    assert loading.model_name(str(folders["shapes64"]), "folder") == "bundled:shapes64"


def test_safety_checker_is_dropped_unless_kept() -> None:
    with_checker = {"_class_name": "StableDiffusionPipeline", "safety_checker": ["x", "y"]}
    assert loading._safety_kwargs(with_checker, keep=False) == {"safety_checker": None,
                                                                "requires_safety_checker": False}
    assert loading._safety_kwargs(with_checker, keep=True) == {}
    assert loading._safety_kwargs({"_class_name": "StableDiffusionXLPipeline"}, keep=False) == {}


def test_broken_folder_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                           "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(ModelLoadError, match="Could not load"):
        load_model(str(tmp_path), device="cpu")


def _fake_checkpoint(path: Path, keys: list[str]) -> Path:
    from safetensors.torch import save_file

    save_file({key: torch.zeros(1) for key in keys}, str(path))
    return path


def test_single_file_route_detects_sdxl(tmp_path: Path, monkeypatch) -> None:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    sd = _fake_checkpoint(tmp_path / "sd15.safetensors", ["model.diffusion_model.input_blocks.0.0.weight"])
    xl = _fake_checkpoint(tmp_path / "sdxl.safetensors", ["conditioner.embedders.1.model.ln_final.weight"])
    assert not loading.is_sdxl_checkpoint(str(sd)) and loading.is_sdxl_checkpoint(str(xl))
    seen = []

    def fake_loader(cls):
        def from_single_file(path, **kwargs):
            seen.append((cls.__name__, Path(path).name, kwargs))
            raise RuntimeError("stop here")
        return from_single_file

    monkeypatch.setattr(StableDiffusionPipeline, "from_single_file", fake_loader(StableDiffusionPipeline))
    monkeypatch.setattr(StableDiffusionXLPipeline, "from_single_file", fake_loader(StableDiffusionXLPipeline))
    for checkpoint in (sd, xl):
        with pytest.raises(ModelLoadError, match="hub"):  # offline: configs cannot be fetched
            load_model(str(checkpoint), device="cpu")
    assert [(name, file) for name, file, _ in seen] == [("StableDiffusionPipeline", "sd15.safetensors"),
                                                        ("StableDiffusionXLPipeline", "sdxl.safetensors")]
    assert all(kwargs["local_files_only"] for _, _, kwargs in seen)


def test_unreadable_checkpoint_is_one_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="not a readable"):
        load_model(str(bad), device="cpu")


def test_loading_a_model_prints_no_torchvision_notice(tiny_model_dir) -> None:
    import subprocess
    import sys

    # a fresh process: transformers prints its notice once per process, at diffusers' first import
    code = f"from pipelines.loading import load_model; load_model({str(tiny_model_dir)!r}, device='cpu')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "torchvision" not in done.stderr
