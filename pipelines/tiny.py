"""A tiny, seeded Stable Diffusion pipeline built in code, for tests and as a fallback model.

The components follow diffusers' own test recipe (`get_dummy_components` in its
Stable Diffusion tests): a seeded UNet, VAE and CLIP text model, far too small to
draw anything meaningful, but exercising exactly the code paths of a real model.
The tokenizer is the real 49,408-token CLIP tokenizer (`pipelines.tokenizer`), so
prompts tokenize as they would for Stable Diffusion 1.x.

`save_tiny_pipeline(folder)` writes an ordinary diffusers folder, so the tiny model
is loaded through the same `from_pretrained` path as any downloaded model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from pipelines.tokenizer import build_clip_tokenizer

# Bump when the recipe below changes, so stale cached folders are rebuilt.
TINY_VERSION = "1"
TINY_SEED = 0


# The layout both tiny UNets share: two levels, 32/64 channels, cross-attention in the lower one.
TINY_UNET_LAYOUT = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=16,
)


def _unet() -> UNet2DConditionModel:
    """Two-level UNet with one cross-attention block (diffusers' test UNet, 32/64 channels)."""
    torch.manual_seed(TINY_SEED)
    return UNet2DConditionModel(
        **TINY_UNET_LAYOUT,
        cross_attention_dim=32,
        attention_head_dim=2,  # number of heads in diffusers' naming
    )


def _vae() -> AutoencoderKL:
    """Four-block VAE: x8 downsampling like real Stable Diffusion, so sizes behave the same."""
    torch.manual_seed(TINY_SEED)
    return AutoencoderKL(
        block_out_channels=(16, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=16,
        sample_size=64,
    )


def _text_encoder(vocab_size: int, bos: int, eos: int) -> CLIPTextModel:
    """Five-layer CLIP text model of width 32 over the full CLIP vocabulary."""
    torch.manual_seed(TINY_SEED)
    config = CLIPTextConfig(
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=vocab_size,
        max_position_embeddings=77,
    )
    return CLIPTextModel(config).eval()


def _scheduler() -> DDIMScheduler:
    """Stable Diffusion 1.x's noise schedule; DDIM with eta=0 is deterministic."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def build_tiny_pipeline(tokenizer_folder: Path | None = None) -> StableDiffusionPipeline:
    """The tiny seeded pipeline on CPU in float32 (same weights on every run).

    `tokenizer_folder` is where the tokenizer's vocab.json/merges.txt are written;
    a temporary folder is used when it is not given.
    """
    if tokenizer_folder is None:
        tokenizer_folder = Path(tempfile.mkdtemp(prefix="clip-tokenizer-"))
    tokenizer = build_clip_tokenizer(Path(tokenizer_folder))
    text_encoder = _text_encoder(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    pipe = StableDiffusionPipeline(
        unet=_unet(),
        vae=_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_pipeline(folder: Path) -> Path:
    """Build the tiny pipeline and save it as a diffusers folder (written atomically).

    The folder is assembled next to its destination and renamed into place, so two
    processes building it at once never leave a half-written model behind.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        pipe = build_tiny_pipeline(staging / "_tokenizer_build")
        pipe.save_pretrained(staging / "model", safe_serialization=True)
        (staging / "model" / "TINY_VERSION").write_text(TINY_VERSION)
        try:
            os.replace(staging / "model", folder)
        except OSError:
            # Another process won the race and the folder already exists: keep theirs.
            if not is_tiny_folder(folder):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def is_tiny_folder(folder: Path) -> bool:
    """True when `folder` holds a complete tiny model of the current recipe."""
    marker = Path(folder) / "TINY_VERSION"
    return marker.is_file() and marker.read_text().strip() == TINY_VERSION


def tiny_model_dir() -> Path:
    """Where the tiny model is cached: `$LATENT_MORPH_CACHE` or `~/.cache/latent-morph`."""
    root = os.environ.get("LATENT_MORPH_CACHE") or Path.home() / ".cache" / "latent-morph"
    return Path(root) / f"tiny-sd-v{TINY_VERSION}"


def ensure_tiny_model(folder: Path | None = None) -> Path:
    """The tiny model's folder, built and saved on first use."""
    folder = Path(folder) if folder is not None else tiny_model_dir()
    if not is_tiny_folder(folder):
        if folder.exists():
            shutil.rmtree(folder)  # a stale recipe: rebuild
        save_tiny_pipeline(folder)
    return folder


def build_tiny_sdxl_pipeline(tokenizer_folder: Path | None = None):
    """A tiny seeded SDXL pipeline (diffusers' SDXL test recipe, real CLIP tokenizer for both encoders).

    SDXL adds a second text encoder whose pooled output conditions the UNet; the
    morph interpolates it too. Used by the tests; not saved or offered as a model.
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    if tokenizer_folder is None:
        tokenizer_folder = Path(tempfile.mkdtemp(prefix="clip-tokenizer-"))
    tokenizer = build_clip_tokenizer(Path(tokenizer_folder))
    torch.manual_seed(TINY_SEED)
    unet = UNet2DConditionModel(
        **TINY_UNET_LAYOUT,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six micro-conditioning sizes + pooled width
        cross_attention_dim=64,  # both encoders' hidden states side by side
    )
    config = _text_encoder(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id).config
    config.projection_dim = 32
    torch.manual_seed(TINY_SEED)
    text_encoder = CLIPTextModel(config).eval()
    torch.manual_seed(TINY_SEED + 1)
    text_encoder_2 = CLIPTextModelWithProjection(config).eval()
    pipe = StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
            timestep_spacing="leading",
        ),
        force_zeros_for_empty_prompt=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
