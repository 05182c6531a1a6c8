"""The training script runs end to end, resumes from its checkpoints, and saves a loadable folder.

A few steps of each stage on a few hundred scenes: this checks the mechanics, not the quality
(the shipped weights are checked in test_toy_model.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from pipelines.toy import train


def _checkpoint_step(path: Path) -> int:
    return torch.load(path, weights_only=False)["step"]


def test_training_resumes_and_exports_a_standard_pipeline(tmp_path: Path, monkeypatch) -> None:
    workdir, out = tmp_path / "run", tmp_path / "model"
    small = ["--workdir", str(workdir), "--out", str(out), "--dataset-size", "64", "--vae-steps", "3",
             "--decoder-steps", "2", "--threads", "1",
             "--vae-bf16", "off"]  # bf16 is far slower than fp32 on CPUs without native bf16
    train.main(small + ["--unet-steps", "2"])
    assert _checkpoint_step(workdir / "denoiser.ckpt") == 2
    vae_written = (workdir / "vae.ckpt").stat().st_mtime_ns
    # A longer target resumes from step 2 instead of starting again.
    starts = []
    loop = train._denoiser_loop
    monkeypatch.setattr(train, "_denoiser_loop", lambda *args: (starts.append(args[9]), loop(*args)))
    train.main(small + ["--unet-steps", "4"])
    assert starts == [2]
    assert _checkpoint_step(workdir / "denoiser.ckpt") == 4
    assert (workdir / "vae.ckpt").stat().st_mtime_ns == vae_written  # finished stages are not redone

    summary = json.loads((out / "training.json").read_text())
    assert summary["config"]["unet_steps"] == 4
    assert set(summary["final_losses"]) == {"vae_l1", "decoder_l1", "unet_epsilon_mse"}
    pipe = StableDiffusionPipeline.from_pretrained(out, dtype=torch.float32)
    assert pipe.unet.config.sample_size == 16 and len(pipe.tokenizer) == 49408
    image = pipe("a red circle", num_inference_steps=2, height=64, width=64,
                 generator=torch.Generator("cpu").manual_seed(0)).images[0]
    assert image.size == (64, 64)
