"""The bundled models as configurations: sizes, data source and training schedule.

`MODELS[name]` is what `python -m pipelines.toy.train --model name` trains. A model is a
`ModelSpec` (architecture and data, fixed) plus a `TrainConfig` (steps, rates and seed,
which the command line may override); the builders below turn a spec into diffusers modules.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel


@dataclass(frozen=True)
class TrainConfig:
    model: str = "shapes64"
    seed: int = 0
    threads: int = 2
    vae_steps: int = 2000
    vae_batch: int = 32
    vae_lr: float = 5e-4
    kl_weight: float = 2e-6
    vae_bf16: bool = True  # bf16 autocast in the VAE stages: 2x faster on CPUs with bf16, 20-50x slower without
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


@dataclass(frozen=True)
class ModelSpec:
    """Architecture and data of one bundled model."""

    name: str
    side: int  # image side in pixels
    data: str  # module with `sample_scene(rng)`, `caption(scene, rng)`, `image_batch(scenes, side)`
    vae_channels: tuple[int, ...]  # one VAE block each; down-sampling is 2 ** (blocks - 1)
    vae_groups: int  # GroupNorm groups; must divide every VAE width
    text_hidden: int  # CLIP text encoder width (the 49,408-token table is vocab x this)
    text_layers: int
    unet_channels: tuple[int, ...]  # UNet levels on the latents, finest first
    unet_attention: tuple[bool, ...]  # which levels cross-attend to the text (the middle always does)
    # Render the training set once and let the VAE stages sample from it (for slow drawings);
    # otherwise the VAE stages draw fresh scenes for every batch.
    image_pool: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def latent_side(self) -> int:
        return self.side // 2 ** (len(self.vae_channels) - 1)

    def data_module(self) -> ModuleType:
        return importlib.import_module(self.data)


MODELS: dict[str, ModelSpec] = {
    "shapes64": ModelSpec(
        name="shapes64", side=64, data="pipelines.toy.dataset", vae_channels=(32, 64, 64),
        vae_groups=32, text_hidden=64, text_layers=4, unet_channels=(32, 64, 128),
        unet_attention=(True, True, False),
    ),
    # Landscapes at 128 px: a x8 VAE keeps the latents at 16x16x4, like shapes64's. Step counts
    # were set from steps/s measured at one thread on a shared 2-core machine (model card).
    "scenes": ModelSpec(
        name="scenes", side=128, data="pipelines.toy.scenes_data", vae_channels=(8, 16, 32, 64),
        vae_groups=4, text_hidden=64, text_layers=4, unet_channels=(32, 64, 128),
        # No attention at 16x16 (the UNet's costliest part on CPU: 3.3 -> 2.0 s a step of 32);
        # the text sets colours and layout, which the 8x8 and 4x4 levels carry.
        unet_attention=(False, True, True), image_pool=True,
        # Step counts sized so the whole run fits about 150 minutes on a 2-core CPU that is
        # busy with other work too (one thread each; measured: VAE 1.1-2.3 s a step, UNet
        # 1.6-2.6 s a step of 32 under that load).
        train=TrainConfig(model="scenes", threads=1, vae_steps=800, vae_batch=8, vae_bf16=False,
                          decoder_steps=400, dataset_size=20_000, unet_steps=5600, unet_batch=32,
                          unet_lr=5e-4, checkpoint_every=200),
    ),
}


def make_vae(spec: ModelSpec) -> AutoencoderKL:
    """No attention (cheap on CPU), one layer per block, 4 latent channels."""
    blocks = len(spec.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=spec.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=spec.vae_groups,
        sample_size=spec.side,
        mid_block_add_attention=False,
    )


def make_text_encoder(spec: ModelSpec) -> CLIPTextModel:
    """A small CLIP text transformer over the full 49,408-token CLIP vocabulary.

    Hidden size 64 keeps the token table (the bulk of its weights) at 6 MB in fp16.
    """
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=spec.text_hidden,
        intermediate_size=4 * spec.text_hidden,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=spec.text_hidden,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(config)


def make_unet(spec: ModelSpec) -> UNet2DConditionModel:
    """Cross-attention at the levels `spec.unet_attention` names, and in the middle block."""
    down = tuple("CrossAttnDownBlock2D" if attend else "DownBlock2D" for attend in spec.unet_attention)
    up = tuple("CrossAttnUpBlock2D" if attend else "UpBlock2D" for attend in reversed(spec.unet_attention))
    return UNet2DConditionModel(
        sample_size=spec.latent_side,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=spec.unet_channels,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=spec.text_hidden,
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
