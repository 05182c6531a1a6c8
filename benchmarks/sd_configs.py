"""The published architectures of SD 1.5, SD 2.1, SD-Turbo and SDXL, as config dicts, built with random weights.

No weights and no hub access: the dicts below are the `config.json` files of the
hub repos (runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1,
stabilityai/sd-turbo, stabilityai/stable-diffusion-xl-base-1.0), keeping only the
keys that differ from the diffusers / transformers defaults. They give the real
parameter counts and the real compute and memory of one denoising step; the
pictures are noise. `build_pipeline` returns the stock diffusers pipeline class of
each model, without tokenizers: callers feed token ids or prompt embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

_SD_DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
_SD_UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]

SD15_UNET = {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8,
             "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
             "down_block_types": _SD_DOWN, "up_block_types": _SD_UP}
# SD 2.x: OpenCLIP-H context (1024), heads of 64 channels (5/10/20 heads), linear proj_in/out.
SD21_UNET = {**SD15_UNET, "sample_size": 96, "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20],
             "use_linear_projection": True, "upcast_attention": True}
SD_TURBO_UNET = {**SD21_UNET, "sample_size": 64, "upcast_attention": False}  # SD 2.1's net, trained at 512 px
SDXL_UNET = {"sample_size": 128, "cross_attention_dim": 2048, "attention_head_dim": [5, 10, 20],
             "block_out_channels": [320, 640, 1280], "layers_per_block": 2, "use_linear_projection": True,
             "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
             "transformer_layers_per_block": [1, 2, 10], "addition_embed_type": "text_time",
             "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816}

SD_VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
          "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
          "sample_size": 512, "scaling_factor": 0.18215}
SDXL_VAE = {**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}

_CLIP = {"vocab_size": 49408, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
CLIP_L = {**_CLIP, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12, "hidden_act": "quick_gelu", "projection_dim": 768}  # openai/clip-vit-large-patch14
OPENCLIP_H = {**_CLIP, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
              "num_attention_heads": 16, "hidden_act": "gelu", "projection_dim": 512}  # 24 layers less the last
OPENCLIP_BIGG = {**_CLIP, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                 "num_attention_heads": 20, "hidden_act": "gelu", "projection_dim": 1280}

_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
          "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True}


@dataclass(frozen=True)
class ModelSpec:
    """One published model: its component configs and how it is used."""

    name: str
    pipeline: str  # the diffusers pipeline class
    unet: dict
    vae: dict
    text_encoders: list[tuple[str, dict]]  # (CLIPTextModel | CLIPTextModelWithProjection, config)
    scheduler: tuple[str, dict]
    size: int  # native width = height in pixels
    steps: int  # the step count it is usually run with
    guidance: float  # 0 or 1: no classifier-free guidance (one UNet row per frame)
    hub_id: str = ""
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def uses_cfg(self) -> bool:
        return self.guidance > 1.0


MODELS: dict[str, ModelSpec] = {
    "sd15": ModelSpec("SD 1.5", "StableDiffusionPipeline", SD15_UNET, SD_VAE, [("CLIPTextModel", CLIP_L)],
                      ("PNDMScheduler", _BETAS), 512, 25, 7.5, "runwayml/stable-diffusion-v1-5"),
    "sd21": ModelSpec("SD 2.1", "StableDiffusionPipeline", SD21_UNET, {**SD_VAE, "sample_size": 768},
                      [("CLIPTextModel", OPENCLIP_H)], ("DDIMScheduler", {**_BETAS, "prediction_type": "v_prediction"}),
                      768, 25, 7.5, "stabilityai/stable-diffusion-2-1"),
    "sd-turbo": ModelSpec("SD-Turbo", "StableDiffusionPipeline", SD_TURBO_UNET, SD_VAE, [("CLIPTextModel", OPENCLIP_H)],
                          ("EulerDiscreteScheduler", {**_BETAS, "timestep_spacing": "trailing"}), 512, 1, 0.0,
                          "stabilityai/sd-turbo"),
    "sdxl": ModelSpec("SDXL", "StableDiffusionXLPipeline", SDXL_UNET, SDXL_VAE,
                      [("CLIPTextModel", CLIP_L), ("CLIPTextModelWithProjection", OPENCLIP_BIGG)],
                      ("EulerDiscreteScheduler", {**_BETAS, "timestep_spacing": "leading"}), 1024, 30, 5.0,
                      "stabilityai/stable-diffusion-xl-base-1.0"),
}


def build_unet(spec: ModelSpec) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**spec.unet)


def build_vae(spec: ModelSpec) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL(**spec.vae)


def build_text_encoders(spec: ModelSpec) -> list[torch.nn.Module]:
    import transformers

    return [getattr(transformers, kind)(transformers.CLIPTextConfig(**config)) for kind, config in spec.text_encoders]


def build_scheduler(spec: ModelSpec) -> Any:
    import diffusers

    kind, config = spec.scheduler
    return getattr(diffusers, kind).from_config(config)


def build_pipeline(spec: ModelSpec) -> Any:
    """The stock pipeline with random weights, float32 on CPU; no tokenizer, no safety checker."""
    import diffusers
    from accelerate import init_empty_weights

    # Parameters on the meta device first, then filled cheaply: the default initialisers take
    # minutes for SDXL on one thread, and the pictures are noise either way. Buffers stay real.
    with init_empty_weights(include_buffers=False):
        unet, vae, encoders = build_unet(spec), build_vae(spec), build_text_encoders(spec)
    for module in (unet, vae, *encoders):
        random_fill(module)
    parts: dict[str, Any] = {"unet": unet, "vae": vae, "scheduler": build_scheduler(spec), "text_encoder": encoders[0]}
    if spec.pipeline == "StableDiffusionXLPipeline":
        parts.update(text_encoder_2=encoders[1], tokenizer=None, tokenizer_2=None)
    else:
        parts.update(tokenizer=None, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = getattr(diffusers, spec.pipeline)(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_fill(module: torch.nn.Module, seed: int = 0) -> None:
    """Materialise meta parameters on the CPU: norms at (1, 0), everything else N(0, 0.02)."""
    from accelerate.utils import set_module_tensor_to_device

    generator = torch.Generator("cpu").manual_seed(seed)
    for name, parameter in list(module.named_parameters()):
        if parameter.dim() == 1 and ("norm" in name or name.endswith("bias")):
            value = torch.ones(parameter.shape) if name.endswith("weight") else torch.zeros(parameter.shape)
        else:
            value = torch.empty(parameter.shape).normal_(0.0, 0.02, generator=generator)
        set_module_tensor_to_device(module, name, "cpu", value=value)


def count_parameters(spec: ModelSpec) -> dict[str, int]:
    """Parameters per component, counted on the meta device (no memory, about a second even for SDXL)."""
    with torch.device("meta"):
        counts = {"unet": _count(build_unet(spec)), "vae": _count(build_vae(spec))}
        for index, encoder in enumerate(build_text_encoders(spec)):
            counts["text_encoder" if index == 0 else f"text_encoder_{index + 1}"] = _count(encoder)
    return counts


def _count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())
