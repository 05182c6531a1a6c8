"""Train the bundled toy Stable Diffusion from scratch on CPU and save it as a diffusers folder.

    python -m pipelines.toy.train                    # full run, seed 0, resumes if interrupted
    python -m pipelines.toy.train --export-only      # save the folder from the latest checkpoint

Stages, each resumable from its checkpoint in `--workdir`:
  1. VAE (`AutoencoderKL`, x4 downsampling) on freshly drawn scenes: L1 + a small KL term.
  1b. Fine-tune the decoder alone, the encoder frozen (sharper small shapes; the latent
     space does not move, so this stage may run in a second process beside stage 3).
  2. Encode a fixed set of scenes once into latent means and standard deviations.
  3. CLIP text encoder and UNet together: epsilon prediction with min-SNR weighting,
     offset noise (so plain black and white backgrounds are reachable) and 10% empty captions
     for classifier-free guidance; an EMA of both is what gets saved.
  4. Export `StableDiffusionPipeline` (fp16 safetensors, DPM-Solver++ scheduler) to `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.training_utils import EMAModel, compute_snr
from tqdm import tqdm
from transformers import CLIPTextConfig, CLIPTextModel

from pipelines.tokenizer import build_clip_tokenizer
from pipelines.toy.dataset import caption, image_batch, sample_scene

HERE = Path(__file__).parent
SIDE = 64


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    threads: int = 2
    vae_steps: int = 2000
    vae_batch: int = 32
    vae_lr: float = 5e-4
    kl_weight: float = 2e-6
    decoder_steps: int = 1500  # decoder fine-tuning on the frozen encoder's latents
    decoder_lr: float = 2e-4
    dataset_size: int = 40_000  # scenes encoded once for the UNet stage
    unet_steps: int = 3300
    unet_batch: int = 64
    unet_lr: float = 6e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    empty_caption_rate: float = 0.1  # for classifier-free guidance
    offset_noise: float = 0.1
    snr_gamma: float = 5.0
    checkpoint_every: int = 300


# ---------------------------------------------------------------- model definitions

def make_vae() -> AutoencoderKL:
    """0.9 M parameters: 64x64x3 <-> 16x16x4, no attention (cheap on CPU)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        sample_size=SIDE,
        mid_block_add_attention=False,
    )


def make_text_encoder() -> CLIPTextModel:
    """A small CLIP text transformer over the full 49,408-token CLIP vocabulary.

    Hidden size 64 keeps the token table (the bulk of its weights) at 6 MB in fp16.
    """
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=64,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(config)


def make_unet() -> UNet2DConditionModel:
    """4 M parameters on 16x16 latents; cross-attention at 16x16, 8x8 and the 4x4 middle."""
    return UNet2DConditionModel(
        sample_size=SIDE // 4,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        # In diffusers this is the number of heads; a large value makes many tiny, slow heads.
        attention_head_dim=4,
    )


def make_noise_scheduler() -> DDPMScheduler:
    """Stable Diffusion's own noise schedule, so any SD sampler applies unchanged."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
    )


# ---------------------------------------------------------------- helpers

def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def save_atomically(state: dict, path: Path) -> None:
    """Write through a temporary file so a stopped run never leaves half a checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def log_line(workdir: Path, record: dict) -> None:
    """Append one JSON record (with a wall-clock stamp) to the run's log."""
    with open(workdir / "log.jsonl", "a") as handle:
        handle.write(json.dumps({**record, "time": round(time.time(), 1)}) + "\n")


def final_losses(workdir: Path, last: int = 10) -> dict[str, float]:
    """Mean of the last `last` logged losses of each stage (what the model card reports)."""
    records = [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]
    def mean_of(stage: str, key: str) -> float:
        values = [r[key] for r in records if r["stage"] == stage][-last:]
        return round(sum(values) / max(1, len(values)), 5)

    return {
        "vae_l1": mean_of("vae", "l1"),
        "decoder_l1": mean_of("decoder", "l1"),
        "unet_epsilon_mse": mean_of("unet", "mse"),
    }


# ---------------------------------------------------------------- 1. VAE

def train_vae(config: TrainConfig, workdir: Path) -> AutoencoderKL:
    """Train the autoencoder on scenes drawn on the fly; resumes from `vae.ckpt`."""
    vae = make_vae()
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
        pixels = to_pixels(image_batch([sample_scene(rng) for _ in range(config.vae_batch)], SIDE))
        # bf16 autocast roughly doubles the VAE's speed on CPU; the loss is taken in fp32.
        with torch.autocast("cpu", dtype=torch.bfloat16):
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


# ---------------------------------------------------------------- 1b. decoder

def finetune_decoder(config: TrainConfig, vae: AutoencoderKL, workdir: Path) -> AutoencoderKL:
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
        pixels = to_pixels(image_batch([sample_scene(rng) for _ in range(config.vae_batch)], SIDE))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            latents = vae.encode(pixels).latent_dist.sample()
        with torch.autocast("cpu", dtype=torch.bfloat16):
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


# ---------------------------------------------------------------- 2. latents

@torch.no_grad()
def encode_dataset(config: TrainConfig, vae: AutoencoderKL, workdir: Path) -> dict:
    """Draw the fixed training set once and keep its latent distributions."""
    path = workdir / "latents.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    rng = random.Random(config.seed + 1)
    scenes = [sample_scene(rng) for _ in range(config.dataset_size)]
    means, stds = [], []
    for start in tqdm(range(0, len(scenes), 500), desc="2/3 encode"):
        pixels = to_pixels(image_batch(scenes[start : start + 500], SIDE))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            dist = vae.encode(pixels).latent_dist
        means.append(dist.mean.half())
        stds.append(dist.std.half())
    data = {"scenes": scenes, "mean": torch.cat(means), "std": torch.cat(stds)}
    # SD's convention: latents are multiplied by scaling_factor to reach unit variance.
    data["scaling_factor"] = float(1.0 / data["mean"].float().std())
    torch.save(data, path)
    return data


# ---------------------------------------------------------------- 3. text encoder + UNet

class CaptionTokens:
    """Tokenises captions exactly as `StableDiffusionPipeline.encode_prompt` does, with a cache."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        rows = []
        for text in captions:
            if text not in self.cache:
                self.cache[text] = self.tokenizer(
                    text, padding="max_length", max_length=self.tokenizer.model_max_length,
                    truncation=True, return_tensors="pt",
                ).input_ids[0]
            rows.append(self.cache[text])
        return torch.stack(rows)


def train_denoiser(config: TrainConfig, data: dict, workdir: Path, tokenizer):
    """Train text encoder and UNet jointly; returns the EMA copies."""
    text_encoder, unet = make_text_encoder(), make_unet()
    parameters = list(text_encoder.parameters()) + list(unet.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.unet_lr, weight_decay=1e-2)
    ema = EMAModel(parameters, decay=config.ema_decay)
    noise_scheduler = make_noise_scheduler()
    start, rng_state = 0, None
    checkpoint_path = workdir / "denoiser.ckpt"
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        text_encoder.load_state_dict(state["text_encoder"])
        unet.load_state_dict(state["unet"])
        optimizer.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        start, rng_state = state["step"], state["rng"]
    if start < config.unet_steps:
        _denoiser_loop(config, data, workdir, tokenizer, text_encoder, unet, optimizer, ema,
                       noise_scheduler, start, rng_state, checkpoint_path)
    ema.copy_to(parameters)
    return text_encoder.eval(), unet.eval()


def _denoiser_loop(config, data, workdir, tokenizer, text_encoder, unet, optimizer, ema,
                   noise_scheduler, start, rng_state, checkpoint_path: Path) -> None:
    rng = random.Random(config.seed + 2)
    if rng_state is not None:
        rng.setstate(rng_state)
    generator = torch.Generator().manual_seed(config.seed + 3 + start)
    tokens = CaptionTokens(tokenizer)
    scenes, scale = data["scenes"], data["scaling_factor"]
    text_encoder.train()
    unet.train()
    bar = tqdm(range(start, config.unet_steps), desc="3/3 UNet", initial=start, total=config.unet_steps)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = config.unet_lr * lr_factor(step, config.unet_steps, config.warmup_steps)
        index = torch.tensor([rng.randrange(len(scenes)) for _ in range(config.unet_batch)])
        captions = [
            "" if rng.random() < config.empty_caption_rate else caption(scenes[i], rng)
            for i in index.tolist()
        ]
        mean, std = data["mean"][index].float(), data["std"][index].float()
        latents = (mean + std * torch.randn(mean.shape, generator=generator)) * scale
        noise = torch.randn(latents.shape, generator=generator)
        noise += config.offset_noise * torch.randn(latents.shape[:2] + (1, 1), generator=generator)
        timesteps = torch.randint(0, 1000, (len(index),), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        hidden = text_encoder(tokens(captions))[0]
        prediction = unet(noisy, timesteps, hidden).sample
        # Min-SNR-gamma weighting (Hang et al. 2023) for epsilon prediction.
        snr = compute_snr(noise_scheduler, timesteps)
        weights = torch.clamp(snr, max=config.snr_gamma) / snr
        per_sample = F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * weights).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(text_encoder.parameters()) + list(unet.parameters()), 1.0)
        optimizer.step()
        ema.step(list(text_encoder.parameters()) + list(unet.parameters()))
        bar.set_postfix(loss=f"{per_sample.mean().item():.4f}")
        if (step + 1) % 50 == 0:
            log_line(workdir, {"stage": "unet", "step": step + 1, "mse": per_sample.mean().item(),
                               "weighted": loss.item()})
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.unet_steps:
            save_atomically(
                {"text_encoder": text_encoder.state_dict(), "unet": unet.state_dict(),
                 "optimizer": optimizer.state_dict(), "ema": ema.state_dict(), "step": step + 1,
                 "rng": rng.getstate()},
                checkpoint_path,
            )


# ---------------------------------------------------------------- 4. export

def export(vae, text_encoder, unet, tokenizer, scaling_factor: float, out: Path) -> None:
    """Save a standard `StableDiffusionPipeline` folder in fp16 safetensors."""
    vae.register_to_config(scaling_factor=scaling_factor)
    scheduler = DPMSolverMultistepScheduler.from_config(make_noise_scheduler().config)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "shapes64", help="diffusers folder to write")
    parser.add_argument("--workdir", type=Path, default=HERE / "runs" / "shapes64",
                        help="checkpoints, latents and the training log")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--vae-steps", type=int, default=TrainConfig.vae_steps)
    parser.add_argument("--decoder-steps", type=int, default=TrainConfig.decoder_steps)
    parser.add_argument("--unet-steps", type=int, default=TrainConfig.unet_steps)
    parser.add_argument("--dataset-size", type=int, default=TrainConfig.dataset_size)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads)
    parser.add_argument("--decoder-only", action="store_true",
                        help="run only the decoder fine-tuning (it needs the trained VAE; it can run "
                             "in a second process beside the UNet stage)")
    parser.add_argument("--export-only", action="store_true",
                        help="save the folder from the latest checkpoints without training further")
    args = parser.parse_args(argv)
    config = TrainConfig(seed=args.seed, threads=args.threads, vae_steps=args.vae_steps,
                         decoder_steps=args.decoder_steps, unet_steps=args.unet_steps,
                         dataset_size=args.dataset_size)
    torch.set_num_threads(config.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tokenizer = build_clip_tokenizer(args.workdir / "tokenizer")
    # Exporting only: zero step targets make every stage load its checkpoint and stop.
    run = config
    if args.export_only:
        run = TrainConfig(**{**asdict(config), "vae_steps": 0, "decoder_steps": 0, "unet_steps": 0})
    else:
        (args.workdir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    vae = train_vae(run, args.workdir)
    vae = finetune_decoder(run, vae, args.workdir)
    if args.decoder_only:
        return
    data = encode_dataset(run, vae, args.workdir)
    text_encoder, unet = train_denoiser(run, data, args.workdir, tokenizer)
    export(vae, text_encoder, unet, tokenizer, data["scaling_factor"], args.out)
    elapsed = time.time() - started
    log_line(args.workdir, {"stage": "export", "seconds_this_run": elapsed, "out": str(args.out)})
    summary = {"config": json.loads((args.workdir / "config.json").read_text()),
               "final_losses": final_losses(args.workdir),
               "scaling_factor": data["scaling_factor"]}
    (args.out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved {args.out} ({elapsed / 60:.1f} min this run)")


if __name__ == "__main__":
    main()
