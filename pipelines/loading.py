"""Model spec -> a ready diffusers pipeline, with device and dtype decided once, here.

A spec is one of:
- a local diffusers folder (with `model_index.json`), e.g. the bundled toy model;
- a single `.safetensors` checkpoint (Stable Diffusion 1.x/2.x, or SDXL when its
  keys say so), loaded with `from_single_file`;
- a Hugging Face hub id such as `stabilityai/sd-turbo` (downloaded or cached);
- `tiny`: the tiny model built from code (`pipelines.tiny`).

Device: cuda, then mps, then cpu; float16 on CUDA, float32 elsewhere. The safety
checker is off by default (a local tool, like diffusers' own examples for local
use); `keep_safety_checker=True` keeps it, and flagged frames are reported.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

# The models shipped in the repo, by the name `--model` takes; the first one present in this
# checkout is the default (the landscapes, then the shapes: a checkout without the scenes
# weights still starts offline).
BUNDLED_MODELS = {"scenes": Path(__file__).parent / "toy" / "scenes",
                  "shapes64": Path(__file__).parent / "toy" / "shapes64"}
TINY_NAME = "tiny"
SAFETY_CHECKER_REPO = "CompVis/stable-diffusion-safety-checker"
# A hub id: "name" or "owner/name" made of letters, digits, '-', '_' and '.'.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# How long to wait for the hub before deciding we are offline (a missing network
# otherwise costs ~30 s of retries inside huggingface_hub).
HUB_PROBE_SECONDS = 3.0


@dataclass(frozen=True)
class LoadedModel:
    """A loaded pipeline and what the manifest records about it."""

    pipe: "DiffusionPipeline"  # StableDiffusionPipeline (or SDXL), progress bar disabled
    name: str  # hub id, folder name, 'bundled:<name>' (scenes, shapes64) or 'tiny'
    device: torch.device
    dtype: torch.dtype


class ModelLoadError(Exception):
    """A model could not be loaded; the message is one sentence meant for the user."""


def bundled_present() -> list[str]:
    """The bundled models this checkout has weights for, the default first."""
    return [name for name, folder in BUNDLED_MODELS.items() if (folder / "model_index.json").is_file()]


def default_model_spec() -> str:
    """The first bundled model present, else the tiny model (built on first use)."""
    present = bundled_present()
    if present:
        return str(BUNDLED_MODELS[present[0]])
    from pipelines.tiny import ensure_tiny_model  # imports diffusers: only when needed

    return str(ensure_tiny_model())


def bundled_folder(name: str) -> str:
    """The folder of a bundled model by name, or ModelLoadError when this checkout lacks it."""
    folder = BUNDLED_MODELS[name]
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"The bundled model '{name}' is not in this checkout ({folder} has no model_index.json); "
            f"train it with: python -m pipelines.toy.train --model {name}"
        )
    return str(folder)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an explicit name must be available."""
    import torch  # here, not at import: `python -m pipelines --help` and bad flags answer without it

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("Device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("Device 'mps' was asked for but Apple's MPS is not available; use --device cpu or auto.")
    if name not in ("cuda", "mps", "cpu"):
        raise ModelLoadError(f"Unknown device {name!r}; use auto, cpu, cuda or mps.")
    return torch.device(name)


def dtype_for(device: torch.device) -> torch.dtype:
    """float16 on CUDA (half the memory, tensor cores); float32 elsewhere (CPU has no fast fp16)."""
    import torch

    return torch.float16 if device.type == "cuda" else torch.float32


def load_model(spec: str | None = None, device: str = "auto", keep_safety_checker: bool = False) -> LoadedModel:
    """Load a model spec (see the module docstring) onto a device, ready for `Morpher`.

    Raises `ModelLoadError` with one clear sentence when the spec cannot be loaded.
    """
    from pipelines.notices import drop_torchvision_notice

    drop_torchvision_notice()  # before diffusers is imported
    torch_device = resolve_device(device)
    dtype = dtype_for(torch_device)
    if spec is None or spec == "":
        spec = default_model_spec()
    elif spec == TINY_NAME:
        from pipelines.tiny import ensure_tiny_model

        spec = str(ensure_tiny_model())
    elif spec in BUNDLED_MODELS:
        spec = bundled_folder(spec)
    kind, source = classify_spec(spec)
    if kind == "folder":
        pipe = _load_folder(source, dtype, keep_safety_checker)
    elif kind == "file":
        pipe = _load_single_file(source, dtype, keep_safety_checker)
    else:
        pipe = _load_hub(source, dtype, keep_safety_checker)
    pipe.to(torch_device)
    if torch_device.type == "cuda":
        # Decode a batch one frame at a time: the VAE's activations at 512 px are the peak of a
        # batched morph, and slicing is what lets 8 frames a call fit in 8 GB (BENCHMARKS.md,
        # "Real model sizes"); on a CPU memory is not the limit and batching decodes is faster.
        pipe.vae.enable_slicing()
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(pipe=pipe, name=model_name(spec, kind), device=torch_device, dtype=dtype)


def classify_spec(spec: str) -> tuple[str, str]:
    """('folder' | 'file' | 'hub', source) for a spec, or ModelLoadError if it is none of them."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(f"Folder '{spec}' is not a diffusers model: it has no model_index.json.")
        return "folder", str(path)
    if path.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".bin"):
        if path.suffix.lower() != ".safetensors":
            raise ModelLoadError(f"'{spec}': only .safetensors checkpoints are loaded (pickle files can run code).")
        if not path.is_file():
            raise ModelLoadError(f"Checkpoint file '{spec}' does not exist.")
        return "file", str(path)
    if path.exists():
        raise ModelLoadError(f"'{spec}' is neither a diffusers folder nor a .safetensors file.")
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise ModelLoadError(f"Model '{spec}' not found: no such folder or file.")
    return "hub", spec


def model_name(spec: str, kind: str) -> str:
    """The name recorded in manifests: a short, stable label for the model."""
    if kind == "hub":
        return spec
    from pipelines.tiny import tiny_model_dir

    path = Path(spec).expanduser().resolve()
    for name, folder in BUNDLED_MODELS.items():
        if path == folder.resolve():
            return f"bundled:{name}"
    if path == tiny_model_dir().resolve():
        return TINY_NAME
    return path.name


def _safety_kwargs(components: dict[str, Any], keep: bool) -> dict[str, Any]:
    """Loader kwargs that drop the safety checker when the model has one and it is not kept."""
    if keep or "safety_checker" not in components:
        return {}
    return {"safety_checker": None, "requires_safety_checker": False}


def _load_folder(folder: str, dtype: torch.dtype, keep: bool) -> "DiffusionPipeline":
    """A local diffusers folder, through the same `from_pretrained` as any model."""
    from diffusers import DiffusionPipeline

    components = json.loads((Path(folder) / "model_index.json").read_text())
    try:
        return DiffusionPipeline.from_pretrained(
            folder, dtype=dtype, local_files_only=True, **_safety_kwargs(components, keep)
        )
    except Exception as error:  # diffusers raises many types; the user needs one sentence
        raise ModelLoadError(f"Could not load the model in '{folder}': {_first_line(error)}") from error


def hub_is_offline() -> bool:
    """True when HF_HUB_OFFLINE is set or the hub cannot be reached within a few seconds."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    if flag or constants.HF_HUB_OFFLINE:
        return True
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=HUB_PROBE_SECONDS):
            return False
    except OSError:
        return True


def _offline_message(spec: str) -> str:
    return (
        f"Model '{spec}' is not in the local Hugging Face cache and the hub cannot be reached: "
        "pass a local diffusers folder or .safetensors file with --model, or connect to the internet and retry."
    )


def _load_hub(repo_id: str, dtype: torch.dtype, keep: bool) -> "DiffusionPipeline":
    """A hub id: from the local cache when offline, else downloaded (only what it needs)."""
    from diffusers import DiffusionPipeline

    offline = hub_is_offline()
    try:
        # model_index.json first: cheap, and tells whether there is a safety checker to skip.
        components = DiffusionPipeline.load_config(repo_id, local_files_only=offline)
    except Exception as error:
        if offline:
            raise ModelLoadError(_offline_message(repo_id)) from error
        raise ModelLoadError(
            f"'{repo_id}' is not a local folder and not a diffusers model on the hub: {_first_line(error)}"
        ) from error
    try:
        return DiffusionPipeline.from_pretrained(
            repo_id, dtype=dtype, local_files_only=offline, **_safety_kwargs(components, keep)
        )
    except Exception as error:
        if offline:
            raise ModelLoadError(_offline_message(repo_id)) from error
        raise ModelLoadError(f"Could not load '{repo_id}': {_first_line(error)}") from error


def is_sdxl_checkpoint(path: str) -> bool:
    """True when a single-file checkpoint has SDXL's second text encoder (read from its keys only)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as checkpoint:
        return any(key.startswith("conditioner.embedders.1.") for key in checkpoint.keys())


def _load_single_file(path: str, dtype: torch.dtype, keep: bool) -> "DiffusionPipeline":
    """A single .safetensors checkpoint; its component configs come from the hub cache or the hub."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    try:
        sdxl = is_sdxl_checkpoint(path)
    except Exception as error:
        raise ModelLoadError(f"'{path}' is not a readable .safetensors file: {_first_line(error)}") from error
    pipeline_class = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    offline = hub_is_offline()
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": offline}
    if not sdxl and keep:
        kwargs.update(_single_file_safety_checker(dtype, offline))
    try:
        return pipeline_class.from_single_file(path, **kwargs)
    except Exception as error:
        if offline:
            raise ModelLoadError(
                f"'{path}' needs its model configuration from the Hugging Face hub, which is not cached and "
                "cannot be reached: convert it to a diffusers folder and pass that, or connect and retry."
            ) from error
        raise ModelLoadError(f"Could not load '{path}': {_first_line(error)}") from error


def _single_file_safety_checker(dtype: torch.dtype, offline: bool) -> dict[str, Any]:
    """The standard SD safety checker for a single-file model (single files do not include it)."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    try:
        return {
            "safety_checker": StableDiffusionSafetyChecker.from_pretrained(
                SAFETY_CHECKER_REPO, dtype=dtype, local_files_only=offline
            ),
            "feature_extractor": CLIPImageProcessor.from_pretrained(SAFETY_CHECKER_REPO, local_files_only=offline),
        }
    except Exception as error:
        raise ModelLoadError(
            f"The safety checker ({SAFETY_CHECKER_REPO}) could not be loaded: {_first_line(error)}"
        ) from error


def _first_line(error: BaseException) -> str:
    """The first line of an error message (library errors can run to many lines)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
