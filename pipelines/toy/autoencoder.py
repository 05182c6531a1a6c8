"""Training stages 1, 1b and 2: the VAE, its decoder fine-tuning, and encoding the data set.

Each stage resumes from its checkpoint in the work directory. Training images come from an
`ImageSource`: freshly drawn scenes for every batch (shapes64, whose drawings are cheap), or
random, horizontally flipped samples of a training set rendered once (`render_pool`, for
the slower landscapes); the encoding stage then reuses that same rendered set.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from tqdm import tqdm

from pipelines.toy.configs import ModelSpec, TrainConfig, make_vae
from pipelines.toy.stage_utils import log_line, lr_factor, save_atomically, to_pixels


class ImageSource:
    """Batches of uint8 training images, drawn from a `random.Random` (so checkpoints resume)."""

    def __init__(self, spec: ModelSpec, pool: tuple[list, np.ndarray] | None = None) -> None:
        self.spec, self.data, self.pool = spec, spec.data_module(), pool

    def batch(self, rng: random.Random, count: int) -> np.ndarray:
        if self.pool is None:
            return self.data.image_batch([self.data.sample_scene(rng) for _ in range(count)], self.spec.side)
        images = self.pool[1]
        index = sorted(rng.randrange(len(images)) for _ in range(count))
        batch = np.array(images[index])
        for row in range(count):
            if rng.random() < 0.5:  # landscapes have no left or right: flips are free data
                batch[row] = batch[row, :, ::-1]
        return batch


def render_pool(config: TrainConfig, spec: ModelSpec, workdir: Path) -> tuple[list, np.ndarray]:
    """Draw the fixed training set once (seed + 1, as `encode_dataset` does) into `images.npy`."""
    images_path, scenes_path = workdir / "images.npy", workdir / "scenes.pkl"
    if images_path.exists() and scenes_path.exists():
        return pickle.loads(scenes_path.read_bytes()), np.load(images_path, mmap_mode="r")
    data = spec.data_module()
    rng = random.Random(config.seed + 1)
    scenes = [data.sample_scene(rng) for _ in range(config.dataset_size)]
    tmp = workdir / "images.tmp.npy"
    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                       shape=(len(scenes), spec.side, spec.side, 3))
    for start in tqdm(range(0, len(scenes), 250), desc="0 draw"):
        images[start : start + 250] = data.image_batch(scenes[start : start + 250], spec.side)
    images.flush()
    del images
    tmp.replace(images_path)
    scenes_path.write_bytes(pickle.dumps(scenes))
    return scenes, np.load(images_path, mmap_mode="r")


def train_vae(config: TrainConfig, spec: ModelSpec, source: ImageSource, workdir: Path) -> AutoencoderKL:
    """Train the autoencoder: L1 + a small KL term; resumes from `vae.ckpt`."""
    vae = make_vae(spec)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    start, rng_state = 0, None
    checkpoint_path = workdir / "vae.ckpt"
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, rng_state = state["step"], state["rng"]
    if start >= config.vae_steps:
        return vae.eval()
    rng = random.Random(config.seed)
    if rng_state is not None:
        rng.setstate(rng_state)
    torch.manual_seed(config.seed + start)
    vae.train()
    bar = tqdm(range(start, config.vae_steps), desc="1/3 VAE", initial=start, total=config.vae_steps)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = config.vae_lr * lr_factor(step, config.vae_steps, 100)
        pixels = to_pixels(source.batch(rng, config.vae_batch))
        # bf16 autocast doubles the VAE's speed on CPUs with native bf16 (not on all: see
        # `vae_bf16`); the loss is taken in fp32.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.vae_bf16):
            posterior = vae.encode(pixels).latent_dist
            reconstruction = vae.decode(posterior.sample()).sample
        l1 = F.l1_loss(reconstruction.float(), pixels)
        kl = posterior.kl().float().mean()
        loss = l1 + config.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(l1=f"{l1.item():.4f}")
        if (step + 1) % 50 == 0:
            log_line(workdir, {"stage": "vae", "step": step + 1, "l1": l1.item(), "kl": kl.item()})
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.vae_steps:
            save_atomically(
                {"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
                 "rng": rng.getstate()},
                checkpoint_path,
            )
    return vae.eval()


def finetune_decoder(config: TrainConfig, source: ImageSource, vae: AutoencoderKL, workdir: Path) -> AutoencoderKL:
    """Sharpen the decoder with the encoder frozen; resumes from `decoder.ckpt`.

    The latent space does not move, so the UNet (trained on the frozen encoder's latents)
    is unaffected and this stage may even run beside it. Latents are sampled from the
    posterior, as the UNet's outputs will be, so the decoder learns to be robust to that.
    """
    optimizer = torch.optim.AdamW(vae.decoder.parameters(), lr=config.decoder_lr, weight_decay=0.0)
    start, rng_state = 0, None
    checkpoint_path = workdir / "decoder.ckpt"
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        vae.decoder.load_state_dict(state["decoder"])
        optimizer.load_state_dict(state["optimizer"])
        start, rng_state = state["step"], state["rng"]
    if start >= config.decoder_steps:
        return vae.eval()
    rng = random.Random(config.seed + 4)
    if rng_state is not None:
        rng.setstate(rng_state)
    torch.manual_seed(config.seed + 4 + start)
    vae.eval()
    vae.decoder.train()
    bar = tqdm(range(start, config.decoder_steps), desc="1b decoder", initial=start, total=config.decoder_steps)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = config.decoder_lr * lr_factor(step, config.decoder_steps, 50)
        pixels = to_pixels(source.batch(rng, config.vae_batch))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.vae_bf16):
            latents = vae.encode(pixels).latent_dist.sample()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.vae_bf16):
            reconstruction = vae.decode(latents.float()).sample.float()
        l1 = F.l1_loss(reconstruction, pixels)
        loss = l1 + F.mse_loss(reconstruction, pixels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(l1=f"{l1.item():.4f}")
        if (step + 1) % 50 == 0:
            log_line(workdir, {"stage": "decoder", "step": step + 1, "l1": l1.item()})
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.decoder_steps:
            save_atomically(
                {"decoder": vae.decoder.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
                 "rng": rng.getstate()},
                checkpoint_path,
            )
    return vae.eval()


@torch.no_grad()
def encode_dataset(config: TrainConfig, spec: ModelSpec, vae: AutoencoderKL, workdir: Path,
                   pool: tuple[list, np.ndarray] | None = None) -> dict:
    """Keep the latent distributions of the fixed training set (drawn now, or the pool)."""
    path = workdir / "latents.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    data = spec.data_module()
    if pool is None:
        rng = random.Random(config.seed + 1)
        scenes = [data.sample_scene(rng) for _ in range(config.dataset_size)]
    else:
        scenes = pool[0]
    means, stds = [], []
    for start in tqdm(range(0, len(scenes), 500), desc="2/3 encode"):
        if pool is None:
            images = data.image_batch(scenes[start : start + 500], spec.side)
        else:
            images = np.array(pool[1][start : start + 500])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.vae_bf16):
            dist = vae.encode(to_pixels(images)).latent_dist
        means.append(dist.mean.half())
        stds.append(dist.std.half())
    data = {"scenes": scenes, "mean": torch.cat(means), "std": torch.cat(stds)}
    # SD's convention: latents are multiplied by scaling_factor to reach unit variance.
    data["scaling_factor"] = float(1.0 / data["mean"].float().std())
    torch.save(data, path)
    return data
