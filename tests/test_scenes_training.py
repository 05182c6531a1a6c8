"""`python -m pipelines.toy.train --model scenes` runs end to end on a tiny budget and exports a
128 px pipeline with x8 latents, next to (not over) the model card already in the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from pipelines.toy import train
from pipelines.toy.configs import MODELS


def test_scenes_config_keeps_the_unet_on_16x16_latents() -> None:
    spec = MODELS["scenes"]
    assert spec.side == 128 and spec.latent_side == 16
    assert MODELS["shapes64"].latent_side == 16 and MODELS["shapes64"].train.threads == 2


def test_scenes_training_smoke(tmp_path: Path) -> None:
    workdir, out = tmp_path / "run", tmp_path / "model"
    out.mkdir()
    (out / "README.md").write_text("model card\n")
    train.main(["--model", "scenes", "--workdir", str(workdir), "--out", str(out), "--dataset-size", "16",
                "--vae-steps", "2", "--decoder-steps", "1", "--unet-steps", "2", "--vae-batch", "4",
                "--unet-batch", "4", "--threads", "1"])
    assert (workdir / "images.npy").exists()  # the rendered training set, reused by every stage
    assert (out / "README.md").read_text() == "model card\n"
    summary = json.loads((out / "training.json").read_text())
    assert summary["config"]["model"] == "scenes" and summary["config"]["unet_steps"] == 2
    pipe = StableDiffusionPipeline.from_pretrained(out, dtype=torch.float32)
    assert pipe.unet.config.sample_size == 16 and pipe.vae_scale_factor == 8
    image = pipe("a sunset over the ocean", num_inference_steps=2, height=128, width=128,
                 generator=torch.Generator("cpu").manual_seed(0)).images[0]
    assert image.size == (128, 128)
