"""Shared fixtures: the tiny Stable Diffusion model, built once per test session, and two test seams.

Set before anything imports gradio or huggingface_hub: no analytics, and no network
(the hub is never contacted; tests that need real weights sit behind `-m slow`).
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The service and CLI tests run the eager UNet: compiling takes minutes on 2 cores (the compile path
# has its own tests, tests/test_pipelines_speed.py).
os.environ.setdefault("LATENT_MORPH_COMPILE", "off")
os.environ.setdefault("LATENT_MORPH_LANES", "1")  # no worker processes unless a test asks for them

from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly built tiny model saved as a diffusers folder (also the session's model cache)."""
    from pipelines.tiny import ensure_tiny_model, tiny_model_dir as cached_dir

    cache = tmp_path_factory.mktemp("latent-morph-cache")
    os.environ["LATENT_MORPH_CACHE"] = str(cache)  # so 'tiny' and subprocesses find this copy
    return ensure_tiny_model(cached_dir())


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    """The tiny model loaded on CPU through the ordinary folder path of `load_model`."""
    from pipelines.loading import load_model

    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def morpher(tiny_model):
    """One Morpher over the tiny model, shared by the tests (as a service shares it)."""
    from pipelines.engine import Morpher

    return Morpher(tiny_model)


@pytest.fixture(scope="session")
def plain_render() -> Callable[..., Any]:
    """What a user gets from diffusers directly for one prompt and seed: the reference for keyframes."""
    import torch

    def render(pipe, prompt: str, seed: int, request):
        """One plain `pipe(prompt=...)` call with the request's steps, guidance, size and negative prompt."""
        return pipe(
            prompt=prompt,
            negative_prompt=request.negative_prompt or None,
            generator=torch.Generator("cpu").manual_seed(seed),
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            width=request.width,
            height=request.height,
        ).images[0]

    return render


@pytest.fixture
def denoise_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Spies on the render seam: the pipeline keyword arguments of every batch the engine denoises.

    `pipelines.engine` calls `pipelines.render.denoise` by the name it imported, so the
    spy replaces that name; each entry is a copy of the batch's mixed tensors.
    """
    import pipelines.engine
    from pipelines.render import denoise

    calls: list[dict] = []

    def spy(pipe, inputs, *args, **kwargs):
        calls.append({name: tensor.clone() for name, tensor in inputs.items()})
        return denoise(pipe, inputs, *args, **kwargs)

    monkeypatch.setattr(pipelines.engine, "denoise", spy)
    return calls
