"""Inversion: a picture's noise latent, so that rendering it gives the picture back.

The picture is encoded with the VAE (the latent distribution's mean), then walked
back from t = 0 to the noisiest step with the inverse of the model's own sampler
(`DPMSolverMultistepInverseScheduler` for DPM-Solver models, `DDIMInverseScheduler`
otherwise) over the same timesteps the render uses, at guidance 1 with the key's
prompt embedding (guidance above 1 breaks the round trip). diffusers has these
inverse schedulers but no text-to-image inversion loop; this is that loop, no more.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from pipelines.cache import frame_key


def inverse_scheduler(pipe: Any):
    """The inverse of the pipeline's sampler, configured like it."""
    from diffusers import DDIMInverseScheduler, DPMSolverMultistepInverseScheduler, DPMSolverMultistepScheduler

    config = pipe.scheduler.config
    if isinstance(pipe.scheduler, DPMSolverMultistepScheduler):
        return DPMSolverMultistepInverseScheduler.from_config(config)
    # DDIM's inverse knows "leading" and "trailing" spacing only
    spacing = config.get("timestep_spacing", "leading")
    return DDIMInverseScheduler.from_config(config, timestep_spacing=spacing if spacing == "trailing" else "leading")


def sampler_for_inversion(pipe: Any):
    """The forward sampler that undoes `inverse_scheduler`: the model's own, or DDIM with the same spacing."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if isinstance(pipe.scheduler, DPMSolverMultistepScheduler):
        return pipe.scheduler
    spacing = pipe.scheduler.config.get("timestep_spacing", "leading")
    return DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing=spacing if spacing == "trailing" else "leading")


def to_pixels(image: Image.Image, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """RGB picture -> (1, 3, H, W) in [-1, 1], as the VAE takes it."""
    array = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0)
    return array.permute(2, 0, 1).unsqueeze(0).to(device=device, dtype=dtype)


@torch.no_grad()
def encode_picture(pipe: Any, image: Image.Image) -> torch.Tensor:
    """The picture's clean latent (the VAE's mean, scaled as the UNet expects)."""
    vae = pipe.vae
    pixels = to_pixels(image, vae.device, vae.dtype)
    return vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor


@torch.no_grad()
def invert(pipe: Any, latent: torch.Tensor, prompt_embeds: torch.Tensor, steps: int,
           should_stop: Any = None) -> torch.Tensor:
    """Walk a clean latent back to noise over `steps` inverse sampler steps at guidance 1."""
    scheduler = inverse_scheduler(pipe)
    scheduler.set_timesteps(steps, device=latent.device)
    sample = latent.clone()
    for timestep in scheduler.timesteps:
        if should_stop is not None:
            should_stop()
        model_input = scheduler.scale_model_input(sample, timestep)
        noise = pipe.unet(model_input, timestep, encoder_hidden_states=prompt_embeds).sample
        sample = scheduler.step(noise, timestep, sample).prev_sample
    return sample


@torch.no_grad()
def decode_latent(pipe: Any, latent: torch.Tensor) -> Image.Image:
    """A clean latent as a picture (the VAE round trip's second half)."""
    vae = pipe.vae
    pixels = vae.decode(latent / vae.config.scaling_factor).sample
    array = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


class InversionCache:
    """Inverted latents by (model, picture, prompt, steps, sampler): memory LRU plus an optional folder.

    Re-timing or re-rendering a picture morph therefore inverts nothing again. Files
    are small (one latent each, a few KB) and live next to the frame cache.
    """

    def __init__(self, fingerprint: Callable[[], str], folder: Path | None = None, items: int = 64) -> None:
        self.fingerprint = fingerprint
        self.folder = folder
        self.items = items
        self.inverted = 0  # inversions actually run (cache misses)
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()

    def key(self, image_key: Any, context: Any) -> str:
        fields = {"model": self.fingerprint(), "key": image_key.digest(), "steps": context.steps,
                  "sampler": type(context.pipe.scheduler).__name__,
                  "sampler_config": dict(context.pipe.scheduler.config), "shape": list(context.shape)}
        return frame_key(fields)

    def invert(self, image_key: Any, prompt_embeds: torch.Tensor, context: Any) -> torch.Tensor:
        """The picture's noise latent, from the cache or by inversion now."""
        name = self.key(image_key, context)
        if name in self._memory:
            self._memory.move_to_end(name)
            return self._memory[name]
        path = self.folder / name[:2] / f"{name}.pt" if self.folder is not None else None
        if path is not None and path.is_file():
            try:
                return self._remember(name, torch.load(path, map_location="cpu", weights_only=True))
            except (OSError, RuntimeError, EOFError):
                pass  # a damaged file: invert again and overwrite it
        latent = encode_picture(context.pipe, image_key.picture.image)
        noise = invert(context.pipe, latent, prompt_embeds, context.steps, context.check_stop).float().cpu()
        self.inverted += 1
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part")
            torch.save(noise, partial)
            partial.replace(path)
        return self._remember(name, noise)

    def _remember(self, name: str, noise: torch.Tensor) -> torch.Tensor:
        self._memory[name] = noise
        if len(self._memory) > self.items:
            self._memory.popitem(last=False)
        return noise
