"""Train a bundled toy Stable Diffusion from scratch on CPU and save it as a diffusers folder.

    python -m pipelines.toy.train                    # shapes64: full run, seed 0, resumes if interrupted
    python -m pipelines.toy.train --model scenes     # the 128 px landscapes
    python -m pipelines.toy.train --export-only      # save the folder from the latest checkpoint

A model is a configuration in `configs.py` (sizes, data, step counts); flags override its
step counts. Stages, each resumable from its checkpoint in `--workdir`:
  0. (scenes only) Draw the training set once into `images.npy`.
  1. VAE (`AutoencoderKL`) on drawn scenes: L1 + a small KL term.
  1b. Fine-tune the decoder alone, the encoder frozen (sharper details; the latent
     space does not move, so this stage may run in a second process beside stage 3).
  2. Encode a fixed set of scenes once into latent means and standard deviations.
  3. CLIP text encoder and UNet together: epsilon prediction with min-SNR weighting,
     offset noise (so plain black and white backgrounds are reachable) and 10% empty captions
     for classifier-free guidance; an EMA of both is what gets saved.
  4. Export `StableDiffusionPipeline` (fp16 safetensors, DPM-Solver++ scheduler) to `--out`.
Stages 1, 1b and 2 live in `autoencoder.py`; this file holds stage 3, the export and the CLI.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
from diffusers.training_utils import EMAModel, compute_snr
from tqdm import tqdm

from pipelines.tokenizer import build_clip_tokenizer
from pipelines.toy.autoencoder import ImageSource, encode_dataset, finetune_decoder, render_pool, train_vae
from pipelines.toy.configs import MODELS, TrainConfig, make_noise_scheduler, make_text_encoder, make_unet
from pipelines.toy.stage_utils import final_losses, log_line, lr_factor, save_atomically

HERE = Path(__file__).parent


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
    spec = MODELS[config.model]
    text_encoder, unet = make_text_encoder(spec), make_unet(spec)
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
    """Steps `start` to `config.unet_steps` (argument 9 is `start`: a test watches it)."""
    rng = random.Random(config.seed + 2)
    if rng_state is not None:
        rng.setstate(rng_state)
    generator = torch.Generator().manual_seed(config.seed + 3 + start)
    tokens = CaptionTokens(tokenizer)
    caption = MODELS[config.model].data_module().caption
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
    parser.add_argument("--model", choices=sorted(MODELS), default="shapes64", help="which bundled model")
    parser.add_argument("--out", type=Path, help="diffusers folder to write (default pipelines/toy/<model>)")
    parser.add_argument("--workdir", type=Path,
                        help="checkpoints, latents and the training log (default pipelines/toy/runs/<model>)")
    # Step counts and sizes default to the model's configuration.
    for flag in ("seed", "vae_steps", "decoder_steps", "unet_steps", "dataset_size", "threads",
                 "vae_batch", "unet_batch", "checkpoint_every"):
        parser.add_argument("--" + flag.replace("_", "-"), type=int, dest=flag)
    parser.add_argument("--vae-bf16", choices=("on", "off"), default=None,
                        help="bf16 autocast in the VAE stages: 2x faster on CPUs with native bf16, far slower "
                             "without (default: the model's configuration)")
    parser.add_argument("--decoder-only", action="store_true",
                        help="run only the decoder fine-tuning (it needs the trained VAE; it can run "
                             "in a second process beside the UNet stage)")
    parser.add_argument("--export-only", action="store_true",
                        help="save the folder from the latest checkpoints without training further")
    args = parser.parse_args(argv)
    spec = MODELS[args.model]
    overrides = {key: value for key, value in vars(args).items()
                 if key in TrainConfig.__dataclass_fields__ and value is not None and key != "model"}
    if args.vae_bf16 is not None:
        overrides["vae_bf16"] = args.vae_bf16 == "on"
    config = replace(spec.train, model=spec.name, **overrides)
    out = args.out or HERE / spec.name
    workdir = args.workdir or HERE / "runs" / spec.name
    torch.set_num_threads(config.threads)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tokenizer = build_clip_tokenizer(workdir / "tokenizer")
    # Exporting only: zero step targets make every stage load its checkpoint and stop.
    run = config
    if args.export_only:
        run = replace(config, vae_steps=0, decoder_steps=0, unet_steps=0)
    else:
        (workdir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    pool = render_pool(run, spec, workdir) if spec.image_pool else None
    source = ImageSource(spec, pool)
    vae = train_vae(run, spec, source, workdir)
    vae = finetune_decoder(run, source, vae, workdir)
    if args.decoder_only:
        return
    data = encode_dataset(run, spec, vae, workdir, pool)
    text_encoder, unet = train_denoiser(run, data, workdir, tokenizer)
    export(vae, text_encoder, unet, tokenizer, data["scaling_factor"], out)
    elapsed = time.time() - started
    log_line(workdir, {"stage": "export", "seconds_this_run": elapsed, "out": str(out)})
    summary = {"config": json.loads((workdir / "config.json").read_text()),
               "final_losses": final_losses(workdir),
               "scaling_factor": data["scaling_factor"]}
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved {out} ({elapsed / 60:.1f} min this run)")


if __name__ == "__main__":
    main()
