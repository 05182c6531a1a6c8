"""Picture keyframes: how well inversion gives a picture back, and how smoothly a picture morphs into a prompt.

    python -m benchmarks.inversion_bench                          # bundled shapes64: tables, JSON, BENCHMARKS.md
    python -m benchmarks.inversion_bench --model tiny --quick --no-write      # a fast check of the script
    python -m benchmarks.inversion_bench --model scenes           # once the scenes model is in the checkout

For each picture drawn by `benchmarks/pictures.py` (the set matching the model):

1. reconstruction: PSNR of (a) the VAE round trip against the input, (b) the rendered
   keyframe against the input and (c) against the VAE round trip, for the key's prompt
   empty or describing the picture, 10 / 20 / 50 steps, the model's own inverse sampler
   (what ships, `pipelines/inversion.py`) and DDIM's at 20 steps, rendered at guidance 1
   (what the engine does) and at the request's guidance (the naive way). Target: the
   keyframe within 2 dB of the VAE round trip (against the input).
2. the inverted latents' statistics (mean, std, norm / sqrt(numel), per-channel mean and
   std, lag-1 spatial autocorrelation, excess kurtosis) against fresh seeds' noise.
3. smoothness of a picture -> prompt chain (linear t): jump ratio J = max gap / mean gap of
   pixel RMSE between consecutive frames, and the first gap (at the picture) over the
   mean gap, for the engine's way and for fixes tried on the in-between frames only
   (renormalised latent, AdaIN per-channel matching to N(0, 1), guidance schedules),
   against a prompt -> prompt chain of the same prompts as the reference.
   Fixes are prototyped here by mixing latents and embeddings by hand and calling the
   stock pipeline; the keyframe (t = 0) is the same render in every variant.
4. the engine itself on the same chains (`Morpher`, linear and even spacing): its frames
   equal the by-hand ones, and its manifest's reconstruction figures.

Unless `--no-write`: raw figures into benchmarks/inversion_bench.json (one entry per
model), the Markdown part between this set's markers in BENCHMARKS.md, and
docs/inversion_<set>.png. Not part of the test run: a few minutes of CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from benchmarks.morph_bench import machine, table  # noqa: E402
from benchmarks.pictures import SETS, Drawing, draw_set  # noqa: E402
from benchmarks.sections import before_heading, replace_section  # noqa: E402
from pipelines import metrics  # noqa: E402
from pipelines.cache import FrameCache, model_fingerprint  # noqa: E402
from pipelines.engine import Morpher  # noqa: E402
from pipelines.interpolate import interpolate  # noqa: E402
from pipelines.inversion import (  # noqa: E402
    decode_latent,
    encode_picture,
    invert,
    sampler_for_inversion,
)
from pipelines.keys import TextEncoder, draw_noise  # noqa: E402
from pipelines.loading import LoadedModel, load_model  # noqa: E402
from pipelines.manifest import RECONSTRUCTION_TOLERANCE_DB  # noqa: E402
from pipelines.pictures import read_picture  # noqa: E402
from pipelines.request import MorphRequest  # noqa: E402
from pipelines.timing import ease  # noqa: E402
from pipelines.walks import ChainWalk  # noqa: E402

JSON_PATH = ROOT / "benchmarks" / "inversion_bench.json"
DOCS = ROOT / "docs"
SECTION = "## Picture keyframes (inversion)"
TARGET_SEED = 0  # the prompt key's seed in every chain (its fresh noise)
REFERENCE_SEED = 1  # the describing prompt's seed in the prompt -> prompt reference chain
FRESH_SEEDS = range(8)  # fresh noise the inverted latents' statistics are compared with


def markers(picture_set: str) -> tuple[str, str]:
    return (f"<!-- inversion-bench:{picture_set}:start (written by python -m benchmarks.inversion_bench) -->",
            f"<!-- inversion-bench:{picture_set}:end -->")


# ---------------------------------------------------------------- rendering by hand


@dataclass
class Bench:
    """The loaded model and what every measurement shares."""

    model: LoadedModel
    text: TextEncoder
    size: tuple[int, int]
    guidance: float  # the request's guidance (the naive keyframe render and the prompt end of a chain)
    batch: int = 4

    @property
    def pipe(self) -> Any:
        return self.model.pipe

    def embeds(self, prompt: str) -> torch.Tensor:
        """A prompt's embedding exactly as the engine encodes a key's (keys.TextEncoder)."""
        return self.text.encode(prompt, False, None)[0].embeds

    def render(self, latents: torch.Tensor, embeds: torch.Tensor, guidance: float, steps: int) -> list[Image.Image]:
        """One stock pipeline call for a batch, as pipelines/render.py makes it (negative prompt empty)."""
        extra = {}
        if guidance > 1:
            negative = self.text.negative("", guidance, "")
            extra["negative_prompt_embeds"] = negative.embeds.repeat(latents.shape[0], 1, 1)
        return list(self.pipe(prompt_embeds=embeds, latents=latents, guidance_scale=guidance,
                              num_inference_steps=steps, width=self.size[0], height=self.size[1],
                              output_type="pil", **extra).images)


@contextmanager
def sampler(pipe: Any, name: str) -> Iterator[str]:
    """Render with the sampler an inversion undoes: 'own' (what the engine uses) or 'ddim'; restored after."""
    from diffusers import DDIMScheduler

    before = pipe.scheduler
    if name == "ddim" and not isinstance(before, DDIMScheduler):
        # DDIM's inverse knows "leading" and "trailing" spacing only
        pipe.scheduler = DDIMScheduler.from_config(before.config, timestep_spacing="leading")
    pipe.scheduler = sampler_for_inversion(pipe)
    try:
        yield type(pipe.scheduler).__name__
    finally:
        pipe.scheduler = before


# ---------------------------------------------------------------- 1. reconstruction


def psnr(a: Image.Image, b: Image.Image) -> float:
    return round(metrics.psnr(a, b), 2)


def reconstruction(bench: Bench, picture: Any, drawing: Drawing, steps_list: list[int], samplers: list[str],
                   main_steps: int, quick_check: bool = False) -> tuple[dict, list[dict], dict, dict]:
    """VAE round trip, then every (sampler, prompt, steps) inversion rendered at guidance 1 and at the request's.

    Returns (the picture's record, one row per setting, images for the figure, the own
    sampler's inverted latents at `main_steps` by key prompt, for the chains).
    """
    inverted: dict[str, torch.Tensor] = {}
    pipe = bench.pipe
    clean = encode_picture(pipe, picture.image)
    round_trip = decode_latent(pipe, clean)
    vae_db = psnr(round_trip, picture.image)
    rows, images = [], {"input": picture.image, "vae": round_trip}
    for name in samplers:
        with sampler(pipe, name) as scheduler_name:
            for prompt in ("", drawing.prompt):
                embeds = bench.embeds(prompt)
                for steps in (steps_list if name == "own" else [main_steps]):
                    started = time.perf_counter()
                    noise = invert(pipe, clean, embeds, steps)
                    invert_s = time.perf_counter() - started
                    at_one = bench.render(noise, embeds, 1.0, steps)[0]
                    # With an empty key prompt and an empty negative prompt both halves of guidance
                    # are one prediction: any scale renders the guidance-1 frame (checked in --quick runs).
                    at_request = at_one if not prompt and not quick_check else \
                        bench.render(noise, embeds, bench.guidance, steps)[0]
                    if name == "own" and steps == main_steps:
                        inverted[prompt] = noise
                    within = metrics.psnr(at_one, picture.image) >= vae_db - RECONSTRUCTION_TOLERANCE_DB
                    rows.append({
                        "picture": drawing.file, "prompt": prompt, "sampler": name, "scheduler": scheduler_name,
                        "steps": steps, "vae_vs_input_db": vae_db,
                        "g1_vs_input_db": psnr(at_one, picture.image), "g1_vs_vae_db": psnr(at_one, round_trip),
                        "g1_within_tolerance": bool(within),
                        "gN_vs_input_db": psnr(at_request, picture.image),
                        "gN_vs_vae_db": psnr(at_request, round_trip),
                        "invert_s": round(invert_s, 3), "latent": latent_stats(noise),
                    })
                    if name == "own" and prompt and steps == main_steps:
                        images.update({"g1": at_one, "gN": at_request})
    record = {"file": drawing.file, "prompt": drawing.prompt, "note": drawing.note, **picture.record,
              "vae_vs_input_db": vae_db}
    return record, rows, images, inverted


# ---------------------------------------------------------------- 2. latent statistics


def latent_stats(latent: torch.Tensor) -> dict:
    """How Gaussian-looking a (1, C, h, w) latent is; N(0, 1) noise gives 0, 1, 1, ~0, ~0."""
    x = latent.detach().float().cpu()[0]
    flat = x.flatten()
    centred = x - x.mean()
    variance = float(centred.pow(2).mean())
    # neighbour correlation along rows and columns, averaged: i.i.d. noise has ~0, pictures a lot
    lag = float(((centred[:, :, 1:] * centred[:, :, :-1]).mean() + (centred[:, 1:, :] * centred[:, :-1, :]).mean())
                / (2 * variance))
    kurtosis = float(centred.pow(4).mean() / variance**2 - 3.0)
    return {
        "mean": round(float(flat.mean()), 4), "std": round(float(flat.std()), 4),
        "norm_rel": round(float(flat.norm()) / math.sqrt(flat.numel()), 4),
        "channel_mean": [round(float(v), 4) for v in x.mean(dim=(1, 2))],
        "channel_std": [round(float(v), 4) for v in x.std(dim=(1, 2))],
        "lag1_autocorr": round(lag, 4), "excess_kurtosis": round(kurtosis, 4),
    }


def fresh_stats(shape: tuple[int, ...]) -> dict:
    """The same statistics over fresh seeds' noise: each figure's min and max across seeds."""
    every = [latent_stats(draw_noise(seed, shape, torch.float32, torch.device("cpu"))) for seed in FRESH_SEEDS]
    out = {}
    for name in ("mean", "std", "norm_rel", "lag1_autocorr", "excess_kurtosis"):
        out[name] = [min(s[name] for s in every), max(s[name] for s in every)]
    out["channel_mean"] = [min(min(s["channel_mean"]) for s in every), max(max(s["channel_mean"]) for s in every)]
    out["channel_std"] = [min(min(s["channel_std"]) for s in every), max(max(s["channel_std"]) for s in every)]
    out["seeds"] = list(FRESH_SEEDS)
    return out


# ---------------------------------------------------------------- 3. chain smoothness: fixes tried


def fix_none(inverted: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """The engine today: the inverted latent as it is."""
    return inverted


def fix_renormalise(inverted: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """(i) The inverted latent scaled to the fresh noise's norm (slerp then keeps the norm all along)."""
    return inverted * (fresh.float().norm() / inverted.float().norm()).to(inverted.dtype)


def fix_adain(inverted: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """(ii) AdaIN-style (Huang and Belongie, ICCV 2017): each channel standardised to mean 0, std 1."""
    x = inverted.float()
    mean, std = x.mean(dim=(2, 3), keepdim=True), x.std(dim=(2, 3), keepdim=True)
    return ((x - mean) / std).to(inverted.dtype)


def fix_adain_faded(inverted: torch.Tensor, fresh: torch.Tensor, t: float) -> torch.Tensor:
    """(ii') AdaIN faded in with t: continuous at the picture, full correction only at the prompt end."""
    return inverted + t * (fix_adain(inverted, fresh) - inverted)


def guidance_linear(t: float, requested: float) -> float:
    """The engine today: the picture key's 1 mixed linearly toward the request's."""
    return (1.0 - t) * 1.0 + t * requested


def guidance_eased(t: float, requested: float) -> float:
    """(iii) Smoothstep instead of linear: guidance stays near 1 close to the picture."""
    return 1.0 + (requested - 1.0) * float(ease(torch.tensor(t)))


def guidance_requested(t: float, requested: float) -> float:
    """The naive way: every frame but the keyframe at the request's guidance."""
    return 1.0 if t == 0.0 else requested


@dataclass(frozen=True)
class Variant:
    """One way to render a picture -> prompt chain (only its in-between frames differ)."""

    name: str
    label: str
    key: str  # "picture" (inverted, describing prompt), "picture-empty" (empty prompt), "prompt" (reference)
    fix: Callable[..., torch.Tensor] = fix_none
    guidance: Callable[[float, float], float] = guidance_linear
    faded: bool = False  # fix takes t


VARIANTS = [
    Variant("reference", "prompt -> prompt (reference: describing prompt, seed 1)", "prompt"),
    Variant("engine-empty", "picture, empty key prompt (engine)", "picture-empty"),
    Variant("engine", "picture, describing key prompt (engine)", "picture"),
    Variant("renormalise", "(i) renormalised to the fresh noise's norm", "picture", fix_renormalise),
    Variant("adain", "(ii) AdaIN: channels matched to N(0, 1)", "picture", fix_adain),
    Variant("adain-faded", "(ii') AdaIN faded in with t", "picture", fix_adain_faded, faded=True),
    Variant("guidance-eased", "(iii) guidance eased (smoothstep) from 1", "picture", guidance=guidance_eased),
    Variant("guidance-requested", "naive: request's guidance on every in-between frame", "picture",
            guidance=guidance_requested),
]


# The wider study: the engine's way against the one fix that lowered J in part 3 without a jump at the picture.
STUDY = ["engine", "adain-faded"]
STUDY_SEEDS = [0, 1]


def chain_ts(frames: int) -> list[float]:
    """The t of each frame of a two-key linear chain, exactly as the engine plans it."""
    request = MorphRequest(prompts=("a", "b"), frames=frames, size=(8, 8))
    return [float(point["t"]) for point in ChainWalk().plan(request)]


def chains(bench: Bench, picture: Any, drawing: Drawing, frames: int, steps: int, variants: list[Variant],
           inverted: dict[str, torch.Tensor]) -> tuple[list[dict], dict[str, list[Image.Image]]]:
    """Every variant's chain picture -> target prompt; frames with equal inputs are rendered once."""
    pipe = bench.pipe
    shape = (1, pipe.unet.config.in_channels, bench.size[1] // pipe.vae_scale_factor,
             bench.size[0] // pipe.vae_scale_factor)
    fresh = draw_noise(TARGET_SEED, shape, bench.model.dtype, bench.model.device)
    target = bench.embeds(drawing.target)
    start = {}  # key kind -> (noise, embeds, guidance at t = 0)
    for kind, prompt in (("picture", drawing.prompt), ("picture-empty", "")):
        start[kind] = (inverted[prompt].to(bench.model.dtype), bench.embeds(prompt), 1.0)
    start["prompt"] = (draw_noise(REFERENCE_SEED, shape, bench.model.dtype, bench.model.device),
                       bench.embeds(drawing.prompt), bench.guidance)
    ts = chain_ts(frames)
    jobs: dict[tuple, tuple[torch.Tensor, torch.Tensor, float]] = {}
    plan: dict[str, list[tuple]] = {}
    for variant in variants:
        noise, embeds, _ = start[variant.key]
        names = []
        for t in ts:
            if t == 1.0:
                name = ("target",)
                jobs[name] = (fresh, target, bench.guidance)
            elif t == 0.0:  # the keyframe: no fix applies, the same render for every variant of this key
                name = ("key", variant.key)
                jobs[name] = start[variant.key]
            else:
                name = (variant.name, t)
                fixed = variant.fix(noise, fresh, t) if variant.faded else variant.fix(noise, fresh)
                scale = bench.guidance if variant.key == "prompt" else variant.guidance(t, bench.guidance)
                jobs[name] = (interpolate(fixed, fresh, t, "slerp"), interpolate(embeds, target, t, "slerp"), scale)
            names.append(name)
        plan[variant.name] = names
    images = render_jobs(bench, jobs, steps)
    rows, strips = [], {}
    for variant in variants:
        strip = [images[name] for name in plan[variant.name]]
        gaps = metrics.frame_gaps(strip)
        noise = start[variant.key][0]
        fixed = variant.fix(noise, fresh, 1e-9) if variant.faded else variant.fix(noise, fresh)
        rows.append({
            "picture": drawing.file, "variant": variant.name, "label": variant.label, "target": drawing.target,
            "jump_ratio": round(metrics.jump_ratio(gaps), 3), "cv": round(metrics.coefficient_of_variation(gaps), 3),
            "first_over_mean": round(gaps[0] / float(np.mean(gaps)), 3),
            "gaps": [round(gap, 5) for gap in gaps],
            # how far the fix moves the latent just after t = 0 (a jump the picture end then shows)
            "latent_change_at_0": round(float((fixed - noise).float().norm() / noise.float().norm()), 4),
            "keyframe_vs_input_db": psnr(strip[0], picture.image) if variant.key != "prompt" else None,
        })
        strips[variant.name] = strip
    return rows, strips


def fix_study(bench: Bench, keys: list[tuple[Drawing, dict[str, torch.Tensor]]], targets: list[str],
              seeds: list[int], frames: int, steps: int, variants: list[Variant]) -> list[dict]:
    """The promising fixes against the engine's way over many chains: every picture to every target and seed.

    Four chains cannot tell a fix from luck; this pairs each fix with the engine's way on
    the same chain (same keyframes, same fresh noise) and counts where it lowers J.
    """
    pipe = bench.pipe
    shape = (1, pipe.unet.config.in_channels, bench.size[1] // pipe.vae_scale_factor,
             bench.size[0] // pipe.vae_scale_factor)
    ts = chain_ts(frames)
    jobs: dict[tuple, tuple[torch.Tensor, torch.Tensor, float]] = {}
    plans: dict[tuple, list[tuple]] = {}
    for drawing, inverted in keys:
        noise, embeds = inverted[drawing.prompt].to(bench.model.dtype), bench.embeds(drawing.prompt)
        jobs[("key", drawing.file)] = (noise, embeds, 1.0)
        for target in targets:
            for seed in seeds:
                fresh = draw_noise(seed, shape, bench.model.dtype, bench.model.device)
                jobs[("target", target, seed)] = (fresh, bench.embeds(target), bench.guidance)
                for variant in variants:
                    names = [("key", drawing.file)]
                    for t in ts[1:-1]:
                        fixed = variant.fix(noise, fresh, t) if variant.faded else variant.fix(noise, fresh)
                        name = (variant.name, drawing.file, target, seed, t)
                        jobs[name] = (interpolate(fixed, fresh, t, "slerp"),
                                      interpolate(embeds, bench.embeds(target), t, "slerp"),
                                      variant.guidance(t, bench.guidance))
                        names.append(name)
                    plans[(variant.name, drawing.file, target, seed)] = names + [("target", target, seed)]
    images = render_jobs(bench, jobs, steps)
    rows = []
    for (variant, picture, target, seed), names in plans.items():
        gaps = metrics.frame_gaps([images[name] for name in names])
        rows.append({"variant": variant, "picture": picture, "target": target, "seed": seed,
                     "jump_ratio": round(metrics.jump_ratio(gaps), 3), "max_gap": round(max(gaps), 5),
                     "first_over_mean": round(gaps[0] / float(np.mean(gaps)), 3), "path": round(sum(gaps), 4)})
    return rows


def paired(study: list[dict], variant: str, baseline: str = "engine") -> dict:
    """A fix against the engine's way on the same chains: medians, wins, and the median ratio of J."""
    base = {(r["picture"], r["target"], r["seed"]): r for r in study if r["variant"] == baseline}
    mine = {(r["picture"], r["target"], r["seed"]): r for r in study if r["variant"] == variant}
    common = sorted(set(base) & set(mine))
    ratios = [mine[k]["jump_ratio"] / base[k]["jump_ratio"] for k in common]
    return {
        "variant": variant, "chains": len(common),
        "median_j": median(mine[k]["jump_ratio"] for k in common),
        "median_first": median(mine[k]["first_over_mean"] for k in common),
        "median_max_gap": median(mine[k]["max_gap"] for k in common),
        "median_path": median(mine[k]["path"] for k in common),
        "lower_j": sum(mine[k]["jump_ratio"] < base[k]["jump_ratio"] - 1e-9 for k in common),
        "higher_j": sum(mine[k]["jump_ratio"] > base[k]["jump_ratio"] + 1e-9 for k in common),
        "median_j_ratio": median(ratios), "worst_j_ratio": max(ratios) if ratios else float("nan"),
        "best_j_ratio": min(ratios) if ratios else float("nan"),
    }


def render_jobs(bench: Bench, jobs: dict[tuple, tuple], steps: int) -> dict[tuple, Image.Image]:
    """Render every job; those sharing a guidance scale go through the pipeline in batches."""
    by_scale: dict[float, list[tuple]] = {}
    for name, (_, _, scale) in jobs.items():
        by_scale.setdefault(scale, []).append(name)
    images = {}
    for scale, names in by_scale.items():
        for start in range(0, len(names), bench.batch):
            chunk = names[start:start + bench.batch]
            latents = torch.cat([jobs[name][0] for name in chunk])
            embeds = torch.cat([jobs[name][1] for name in chunk])
            for name, image in zip(chunk, bench.render(latents, embeds, scale, steps)):
                images[name] = image
    return images


# ---------------------------------------------------------------- 4. the engine on the same chains


def engine_chain(model: LoadedModel, path: Path, drawing: Drawing, frames: int, steps: int, guidance: float,
                 by_hand: list[Image.Image] | None) -> dict:
    """The shipped engine's picture -> prompt chain, linear and even; compared with the by-hand frames."""
    # One frame cache for both: `even` renders the linear plan as its pilot, so it reuses those frames.
    morpher = Morpher(model, FrameCache())
    out = {"picture": drawing.file}
    for spacing in ("linear", "even"):
        request = MorphRequest(prompts=(f"image:{path}|{drawing.prompt}", drawing.target), seeds=(TARGET_SEED,),
                               frames=frames, steps=steps, guidance=guidance, spacing=spacing)
        started = time.perf_counter()
        result = morpher.render(request)
        seconds = time.perf_counter() - started
        images = [frame.image for frame in result.frames]
        gaps = metrics.frame_gaps(images)
        entry = {"jump_ratio": round(metrics.jump_ratio(gaps), 3),
                 "first_over_mean": round(gaps[0] / float(np.mean(gaps)), 3), "seconds": round(seconds, 2),
                 "frames_rendered": (result.manifest.get("render") or {}).get("frames_rendered"),
                 "cache_hits": (result.manifest.get("render") or {}).get("cache_hits"),
                 "reconstruction": result.manifest["keys"][0].get("reconstruction")}
        if spacing == "linear" and by_hand is not None:
            entry["max_pixel_diff_vs_by_hand"] = int(max(
                np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() for a, b in zip(images, by_hand)))
        out[spacing] = entry
    out["inversions_run"] = morpher.inversions.inverted  # per picture: once, though two morphs were rendered
    return out


# ---------------------------------------------------------------- reporting


def median(values) -> float:
    values = [value for value in values if value is not None and not (isinstance(value, float) and math.isnan(value))]
    return statistics.median(values) if values else float("nan")


def _range(values: list[float]) -> str:
    return f"{min(values):.2f} .. {max(values):.2f}"


def markdown(info: dict, records: list[dict], rows: list[dict], fresh: dict, chain_rows: list[dict],
             engine_rows: list[dict], command: str, picture_set: str, steps: int, summary: list[dict]) -> str:
    m = info["machine"]
    start, end = markers(picture_set)
    g = info["guidance"]
    own = [row for row in rows if row["sampler"] == "own"]
    main_rows = [row for row in own if row["steps"] == steps]
    met = sum(row["g1_within_tolerance"] for row in main_rows)
    naive_met = sum(row["gN_vs_input_db"] >= row["vae_vs_input_db"] - RECONSTRUCTION_TOLERANCE_DB
                    for row in main_rows if row["prompt"])
    described = [row for row in main_rows if row["prompt"]]
    parts = [
        start,
        f"### Model `{info['model']}` (pictures: `{picture_set}` set)",
        "",
        f"`{command}` ({m['date']}; {m['cpu']}, {m['cores_usable']} usable cores, {m['torch_threads']} torch threads; "
        f"torch {m['torch']}, diffusers {m['diffusers']}; CPU, float32). Weights {info['fingerprint'][:12]}, "
        f"{info['size'][0]}x{info['size'][1]}, request guidance {g}, own sampler {info['scheduler']} "
        f"(inverted with its inverse, `pipelines/inversion.py`). Pictures: `python -m benchmarks.pictures` "
        f"(drawn, in `docs/pictures/`). Raw figures: `benchmarks/inversion_bench.json`. "
        f"Run time: {info['wall_s']:.0f} s "
        f"wall, {info.get('cpu_s', float('nan')):.0f} s CPU (one torch thread).",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
        f"| rendered keyframe within {RECONSTRUCTION_TOLERANCE_DB:g} dB of the VAE round trip (vs input), "
        f"{steps} steps, "
        f"guidance 1 | {met}/{len(main_rows)} settings (median {median(r['g1_vs_input_db'] for r in main_rows):.2f} dB "
        f"against the input, VAE round trip {median(r['vae_vs_input_db'] for r in main_rows):.2f} dB); "
        f"{sum(r['g1_within_tolerance'] for r in rows)}/{len(rows)} of all settings below | "
        f"{'yes' if met == len(main_rows) else '**no**'} |",
        f"| the naive way (guidance {g:g}, describing prompt) breaks it | {naive_met}/{len(described)} within; "
        f"median {median(r['gN_vs_vae_db'] for r in described):.2f} dB vs the VAE round trip against "
        f"{median(r['g1_vs_vae_db'] for r in described):.2f} at guidance 1 | "
        f"{'shown' if naive_met < len(described) else 'not shown'} |",
        "",
        "Pictures (as read: centre-cropped to the render's aspect, resized with Lanczos, alpha composited on white):",
        "",
        table(["picture", "file", "describing prompt", "what is photo-like"],
              [[r["file"],
                f"{r['format']} {r['mode']} {r['original_size'][0]}x{r['original_size'][1]}, crop {r['crop']}",
                f"`{r['prompt']}`", r["note"]] for r in records]),
        "",
        "#### 1. Reconstruction (PSNR, dB)",
        "",
        f"VAE = the VAE round trip (encode, decode) against the input: the most any inversion can give back. "
        f"g1 = keyframe rendered at guidance 1 (the engine); g{g:g} = rendered at the request's guidance (naive). "
        f"\"vs VAE\" = against the VAE round trip. Within = g1 vs input >= VAE - {RECONSTRUCTION_TOLERANCE_DB:g} dB "
        f"(the manifest's `within_tolerance`).",
        "",
        table(["picture", "key prompt", "sampler", "steps", "VAE", "g1 vs input", "g1 vs VAE", "within",
               f"g{g:g} vs input", f"g{g:g} vs VAE", "invert (s)"],
              [[row["picture"], f"`{row['prompt']}`" if row["prompt"] else "(empty)",
                row["scheduler"].replace("Scheduler", ""), row["steps"], f"{row['vae_vs_input_db']:.2f}",
                f"{row['g1_vs_input_db']:.2f}", f"{row['g1_vs_vae_db']:.2f}",
                "yes" if row["g1_within_tolerance"] else "**no**", f"{row['gN_vs_input_db']:.2f}",
                f"{row['gN_vs_vae_db']:.2f}", f"{row['invert_s']:.2f}"] for row in rows]),
        "",
        "Median over the pictures (own sampler):",
        "",
        table(["key prompt", "steps", "g1 vs input", "g1 vs VAE", f"g{g:g} vs input", f"g{g:g} vs VAE"],
              [[label, s, f"{median(r['g1_vs_input_db'] for r in sel):.2f}",
                f"{median(r['g1_vs_vae_db'] for r in sel):.2f}",
                f"{median(r['gN_vs_input_db'] for r in sel):.2f}", f"{median(r['gN_vs_vae_db'] for r in sel):.2f}"]
               for label, empty in (("(empty)", True), ("describing", False))
               for s in sorted({r["steps"] for r in own})
               for sel in [[r for r in own if r["steps"] == s and (r["prompt"] == "") == empty]]]),
        "",
        f"![input, VAE round trip, keyframe at guidance 1, at the request's guidance](docs/{figure_name(picture_set)})",
        "",
        f"#### 2. Inverted latents against fresh noise ({steps} steps, own sampler)",
        "",
        f"Fresh noise: seeds {fresh['seeds'][0]}-{fresh['seeds'][-1]}, min .. max over the seeds. Norm is "
        "norm / sqrt(numel) (1 for N(0, 1)); lag-1 = neighbour correlation along rows and columns; channel "
        "figures are min .. max over the latent's channels.",
        "",
        table(["latent", "mean", "std", "norm", "channel means", "channel stds", "lag-1 autocorr", "excess kurtosis"],
              [[f"{row['picture']}, {'describing' if row['prompt'] else 'empty'}", f"{row['latent']['mean']:.3f}",
                f"{row['latent']['std']:.3f}", f"{row['latent']['norm_rel']:.3f}",
                _range(row["latent"]["channel_mean"]),
                _range(row["latent"]["channel_std"]), f"{row['latent']['lag1_autocorr']:.3f}",
                f"{row['latent']['excess_kurtosis']:.2f}"] for row in main_rows]
              + [["**fresh noise**", _range(fresh["mean"]), _range(fresh["std"]), _range(fresh["norm_rel"]),
                  _range(fresh["channel_mean"]), _range(fresh["channel_std"]), _range(fresh["lag1_autocorr"]),
                  _range(fresh["excess_kurtosis"])]]),
        "",
        f"#### 3. Picture -> prompt chains: fixes tried ({info['chain_frames']} frames, linear t, {steps} steps)",
        "",
        "J = largest gap / mean gap (pixel RMSE between consecutive frames); first = the first gap (at the "
        "picture) / mean gap; latent change = |fixed - inverted| / |inverted|, the step a fix puts right after "
        "the keyframe. The keyframe (t = 0) is the same render in every picture variant. Targets: "
        + "; ".join(f"{chain['file']} -> `{chain['target']}`" for chain in info["chains"]) + ".",
        "",
    ]
    pictures_order = [record["file"] for record in records]
    header = (["variant"] + [f"J {name.split('.')[0]}" for name in pictures_order] + ["median J"]
              + [f"first {name.split('.')[0]}" for name in pictures_order] + ["median first", "latent change"])
    body = []
    for variant in dict.fromkeys(row["variant"] for row in chain_rows):
        sel = {row["picture"]: row for row in chain_rows if row["variant"] == variant}
        label = next(iter(sel.values()))["label"]
        body.append([label] + [f"{sel[p]['jump_ratio']:.2f}" for p in pictures_order]
                    + [f"**{median(r['jump_ratio'] for r in sel.values()):.2f}**"]
                    + [f"{sel[p]['first_over_mean']:.2f}" for p in pictures_order]
                    + [f"**{median(r['first_over_mean'] for r in sel.values()):.2f}**",
                       _range([r["latent_change_at_0"] for r in sel.values()])])
    parts += [table(header, body), ""]
    labels = {variant.name: variant.label for variant in VARIANTS}
    chains_each = summary[0]["chains"] if summary else 0
    parts += [] if not summary else [
        f"Over more chains: every picture to each of the {len(info['chains'])} target prompts above, fresh noise of "
        f"seeds {', '.join(map(str, info['study_seeds']))} ({chains_each} chains), each fix paired with the engine's "
        "way on the same chain. Lower J = the fix's J is lower on that chain; ratio = fix's J / engine's J.",
        "",
        table(["variant", "chains", "median J", "median first", "median largest gap", "median path", "lower J",
               "higher J", "median ratio", "best .. worst ratio"],
              [[labels[row["variant"]], row["chains"], f"{row['median_j']:.2f}", f"{row['median_first']:.2f}",
                f"{row['median_max_gap']:.3f}", f"{row['median_path']:.3f}",
                "" if row["variant"] == "engine" else row["lower_j"],
                "" if row["variant"] == "engine" else row["higher_j"],
                "" if row["variant"] == "engine" else f"{row['median_j_ratio']:.2f}",
                "" if row["variant"] == "engine" else f"{row['best_j_ratio']:.2f} .. {row['worst_j_ratio']:.2f}"]
               for row in summary]),
        "",
    ]
    if engine_rows:
        parts += [
            "#### 4. The engine on the same chains",
            "",
            "`Morpher.render` with `image:PATH|prompt` and the target prompt: its linear frames against the "
            "by-hand `engine` variant above (batching changes float rounding only), `--spacing even`, and its "
            "manifest's reconstruction of the picture key.",
            "",
            table(["picture", "J linear", "first linear", "max pixel diff vs by hand", "J even", "first even",
                   "even: new frames (pilot from the cache)", "manifest: vs input", "vs VAE", "within",
                   "inversions run"],
                  [[row["picture"], f"{row['linear']['jump_ratio']:.2f}", f"{row['linear']['first_over_mean']:.2f}",
                    row["linear"].get("max_pixel_diff_vs_by_hand", ""), f"{row['even']['jump_ratio']:.2f}",
                    f"{row['even']['first_over_mean']:.2f}",
                    f"{row['even']['frames_rendered']} ({row['even']['cache_hits']})",
                    row["linear"]["reconstruction"]["psnr_vs_input_db"],
                    row["linear"]["reconstruction"]["psnr_vs_vae_round_trip_db"],
                    "yes" if row["linear"]["reconstruction"]["within_tolerance"] else "**no**",
                    row["inversions_run"]] for row in engine_rows]),
            "",
        ]
    parts.append(end)
    return "\n".join(parts)


def open_section(text: str, section: str) -> str:
    """The first set written opens the inversion section (before the load test, if there is one)."""
    if SECTION in text:
        head, tail = text.split(SECTION, 1)
        return head + SECTION + "\n\n" + section + "\n" + tail
    return before_heading("## Load test")(text, f"{SECTION}\n\n{section}")


def figure_name(picture_set: str) -> str:
    return f"inversion_{picture_set}.png"


def figure(rows: list[dict[str, Image.Image]], path: Path, guidance: float, scale: int = 3) -> None:
    """Input | VAE round trip | keyframe at guidance 1 | at the request's, one picture a row, upscaled (nearest)."""
    columns = ["input", "vae", "g1", "gN"]
    labels = ["input (as read)", "VAE round trip", "keyframe, guidance 1", f"guidance {guidance:g} (naive)"]
    width, height = rows[0]["input"].width * scale, rows[0]["input"].height * scale
    canvas = Image.new("RGB", (len(columns) * (width + 6), len(rows) * (height + 6) + 16), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(labels):
        draw.text((c * (width + 6) + 2, 2), label, fill=(0, 0, 0))
    for r, images in enumerate(rows):
        for c, column in enumerate(columns):
            place = (c * (width + 6), 16 + r * (height + 6))
            canvas.paste(images[column].resize((width, height), Image.NEAREST), place)
    canvas.save(path, optimize=True)


def merge_json(path: Path, name: str, entry: dict) -> None:
    """One entry per model in the JSON file (a later --model scenes run adds its own)."""
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        data = {}
    data[name] = entry
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def run(args: argparse.Namespace) -> tuple[dict, list[dict[str, Image.Image]]]:
    """Parts 1-4 and the fix study; (raw figures, images for the reconstruction figure)."""
    # 1. the model, and what the run covers
    model = load_model(args.model, device="cpu")
    model.pipe.set_progress_bar_config(disable=True)
    picture_set = args.pictures or next((name for name in SETS if name in model.name), "shapes64")
    drawings = SETS[picture_set][:2] if args.quick else SETS[picture_set]
    steps = min(args.steps, 4) if args.quick else args.steps
    steps_list = sorted({steps, *([] if args.quick else args.more_steps)})
    frames = min(args.frames, 5) if args.quick else args.frames
    study_seeds = STUDY_SEEDS[:1] if args.quick else STUDY_SEEDS
    pipe = model.pipe
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    bench = Bench(model, TextEncoder(pipe), (side, side), args.guidance)
    samplers = ["own"] + (["ddim"] if type(pipe.scheduler).__name__ != "DDIMScheduler" else [])
    began, cpu_began = time.perf_counter(), time.process_time()
    records, rows, chain_rows, engine_rows, figure_rows, study_keys = [], [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="inversion-bench-") as folder:
        for drawing, path in draw_set(picture_set, Path(folder))[:len(drawings)]:
            # 2. reconstruction and the inverted latents (the pictures are read as the CLI reads them)
            print(f"{drawing.file}: reconstruction", file=sys.stderr)
            picture = read_picture(path, bench.size)
            record, found, images, inverted = reconstruction(bench, picture, drawing, steps_list, samplers, steps,
                                                             quick_check=args.quick)
            records.append(record)
            rows += found
            figure_rows.append(images)
            # 3. picture -> prompt chains, every variant
            print(f"{drawing.file}: chains", file=sys.stderr)
            with sampler(pipe, "own"):
                found_chains, strips = chains(bench, picture, drawing, frames, steps, VARIANTS, inverted)
            study_keys.append((drawing, inverted))
            chain_rows += found_chains
            # 4. the engine on the same chain
            if not args.no_engine:
                print(f"{drawing.file}: engine", file=sys.stderr)
                engine_rows.append(engine_chain(model, path, drawing, frames, steps, args.guidance, strips["engine"]))
    # 5. the promising fix over many chains
    study, summary = [], []
    if not args.no_study:
        print("fix study", file=sys.stderr)
        targets = list(dict.fromkeys(drawing.target for drawing in drawings))
        with sampler(pipe, "own"):
            study = fix_study(replace(bench, batch=8), study_keys, targets, study_seeds, frames, steps,
                              [variant for variant in VARIANTS if variant.name in STUDY])
        summary = [paired(study, name) for name in STUDY]
    shape = (1, pipe.unet.config.in_channels, side // pipe.vae_scale_factor, side // pipe.vae_scale_factor)
    info = {
        "model": model.name, "fingerprint": model_fingerprint(pipe), "scheduler": type(pipe.scheduler).__name__,
        "size": [side, side], "guidance": args.guidance, "steps": steps, "steps_list": steps_list,
        "chain_frames": frames, "picture_set": picture_set, "machine": machine(),
        "chains": [{"file": d.file, "target": d.target} for d in drawings], "study_seeds": study_seeds,
        "wall_s": round(time.perf_counter() - began, 1), "cpu_s": round(time.process_time() - cpu_began, 1),
    }
    raw = {"info": info, "pictures": records, "reconstruction": rows, "fresh_noise": fresh_stats(shape),
           "chains": chain_rows, "engine": engine_rows, "fix_study": {"summary": summary, "chains": study}}
    return raw, figure_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inversion_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shapes64", help="model spec (default: the bundled shapes64)")
    parser.add_argument("--pictures", choices=sorted(SETS), default=None,
                        help="picture set (default: the one named like the model, else shapes64)")
    parser.add_argument("--steps", type=int, default=20, help="steps of the chains and the main figures (20)")
    parser.add_argument("--more-steps", type=int, nargs="*", default=[10, 50], help="further inversion steps (10 50)")
    parser.add_argument("--guidance", type=float, default=5.0, help="the request's guidance (5)")
    parser.add_argument("--frames", type=int, default=12, help="frames of each picture -> prompt chain (12)")
    parser.add_argument("--quick", action="store_true", help="two pictures, few steps and frames: checks the script")
    parser.add_argument("--no-engine", action="store_true", help="skip part 4 (the engine's own chains)")
    parser.add_argument("--no-study", action="store_true",
                        help="skip the fix study over many chains (the longest part)")
    parser.add_argument("--no-write", action="store_true", help="print only; write no files")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    parser.add_argument("--report-only", metavar="SET", default=None,
                        help="write the Markdown again from the figures saved in benchmarks/inversion_bench.json")
    args = parser.parse_args(argv)

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    if args.report_only:
        raw, figure_rows = json.loads(JSON_PATH.read_text())[args.report_only], None
        command = raw["info"]["command"]
    else:
        raw, figure_rows = run(args)
        given = argv if argv is not None else sys.argv[1:]
        command = "python -m benchmarks.inversion_bench" + (" " + " ".join(given) if given else "")
        raw["info"]["command"] = command
    info, picture_set = raw["info"], raw["info"]["picture_set"]
    section = markdown(info, raw["pictures"], raw["reconstruction"], raw["fresh_noise"], raw["chains"], raw["engine"],
                       command, picture_set, info["steps"], raw["fix_study"]["summary"])
    print(section)
    print(f"wall time {info['wall_s']} s, CPU time {info.get('cpu_s')} s", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps(raw, indent=1, default=str) + "\n")
    if not args.no_write:
        if figure_rows is not None:
            DOCS.mkdir(exist_ok=True)
            figure(figure_rows, DOCS / figure_name(picture_set), info["guidance"])
            merge_json(JSON_PATH, picture_set, raw)
        replace_section(ROOT / "BENCHMARKS.md", section, *markers(picture_set), open_section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
