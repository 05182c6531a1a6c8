"""Speed, smoothness and scale of the morph engine, measured in one run.

    python -m benchmarks.morph_bench                  # bundled model, all three parts, writes BENCHMARKS.md
    python -m benchmarks.morph_bench --model tiny --quick --no-write     # a fast check of the script

1. speed: this engine (prompts encoded once, frames denoised in batches) against the
   naive way other latent-walk tools work (per frame: encode both prompts, interpolate,
   one pipeline call with one image), same model, same frames, side by side; the share
   of render time spent inside the UNet (timed with forward hooks), the VAE decode and
   text encoding; at 16 frames and at 64.
2. smoothness: jump ratio J, CV and directness R of `linear` against `even` spacing over
   a fixed set of prompt pairs and seeds, with the render cost of each (frames denoised,
   relative to a plain render) and the endpoint fidelity (PSNR of the first and last
   frames against plain `pipe(prompt=...)` renders).
3. scale: time and peak resident memory as frames grow (8, 16, 32, 64) and as the
   batch size grows.

Prints Markdown tables; unless `--no-write`, replaces the part of BENCHMARKS.md between
the morph-bench markers (the rest of the file is left alone), saves the plots and the
side-by-side GIF under docs/, and the raw figures in benchmarks/morph_bench.json.
Not part of the default test run: it keeps the CPU busy for several minutes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from benchmarks.sections import replace_section  # noqa: E402

from pipelines import metrics  # noqa: E402
from pipelines.cache import FrameCache, model_fingerprint  # noqa: E402
from pipelines.engine import Morpher  # noqa: E402
from pipelines.interpolate import interpolate  # noqa: E402
from pipelines.keys import draw_noise, keys_for, uses_guidance  # noqa: E402
from pipelines.loading import LoadedModel, load_model  # noqa: E402
from pipelines.render import default_batch_size  # noqa: E402
from pipelines.request import MorphRequest  # noqa: E402
from pipelines.spacing import EVEN_BUDGET  # noqa: E402
from pipelines.walks import ChainWalk  # noqa: E402

START = "<!-- morph-bench:start (written by python -m benchmarks.morph_bench) -->"
END = "<!-- morph-bench:end -->"
DOCS = ROOT / "docs"
# Prompt pairs in the bundled model's own caption language (pipelines/toy/dataset.py).
PAIRS = [
    ("a red circle", "a blue square"),
    ("a small green triangle", "a large yellow star"),
    ("a white star on a black background", "a black circle on a white background"),
    ("a large orange square", "a small purple circle"),
    ("a yellow circle on a blue background", "a red triangle on a green background"),
    ("a blue star", "a green square on a striped background"),
    ("a large black triangle", "a small white square on a checkered background"),
    ("a purple square on a orange background", "a yellow star on a red background"),
]
SEED_PAIRS = [(0, 1), (2, 3)]


# ---------------------------------------------------------------- measuring


class Timers:
    """Time spent inside the UNet, the VAE decode and the text encoder, through hooks (no code changed)."""

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self.seconds = {"unet": 0.0, "vae_decode": 0.0, "text_encoder": 0.0}
        self.calls = {"unet": 0, "vae_decode": 0, "text_encoder": 0}
        self._handles: list = []
        self._started: dict[str, float] = {}

    def _hook(self, module: torch.nn.Module, name: str) -> None:
        def before(*_):
            self._started[name] = time.perf_counter()

        def after(*_):
            self.seconds[name] += time.perf_counter() - self._started.pop(name)
            self.calls[name] += 1

        self._handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def __enter__(self) -> "Timers":
        self._hook(self.pipe.unet, "unet")
        self._hook(self.pipe.text_encoder, "text_encoder")
        vae, decode = self.pipe.vae, self.pipe.vae.decode

        def timed_decode(*args, **kwargs):
            began = time.perf_counter()
            try:
                return decode(*args, **kwargs)
            finally:
                self.seconds["vae_decode"] += time.perf_counter() - began
                self.calls["vae_decode"] += 1

        vae.decode = timed_decode
        return self

    def __exit__(self, *_) -> None:
        for handle in self._handles:
            handle.remove()
        del self.pipe.vae.decode  # the instance attribute: back to the class's method


def rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


@contextmanager
def peak_rss(every_s: float = 0.002) -> Iterator[dict]:
    """Samples resident memory in a thread; yields a dict that gets 'base' and 'peak' (bytes)."""
    gc.collect()
    record = {"base": rss_bytes(), "peak": rss_bytes()}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            record["peak"] = max(record["peak"], rss_bytes())
            stop.wait(every_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        stop.set()
        thread.join()
        record["peak"] = max(record["peak"], rss_bytes())


def timed(function: Callable[[], Any], pipe) -> tuple[Any, float, Timers]:
    """Run `function` once with the hooks on; (its result, wall seconds, timers)."""
    with Timers(pipe) as timers:
        began = time.perf_counter()
        result = function()
        seconds = time.perf_counter() - began
    return result, seconds, timers


# ---------------------------------------------------------------- the naive way


@torch.no_grad()
def naive_frames(pipe, request: MorphRequest) -> list[Image.Image]:
    """What other latent-walk tools do: per frame, encode both prompts, interpolate, one pipeline call.

    Same t, same noise, same embeddings as the engine's frames of a chain (so the same
    pictures): noise mixed with `request.noise_interp`, embeddings with `request.interp`.
    But the prompts are encoded again for every frame and every frame is its own call.
    `request` must have its size (see `Morpher.resolve`).
    """
    device = pipe._execution_device
    guided = uses_guidance(pipe, request.guidance)
    seeds = [key.seed for key in keys_for(request.prompts, request.seeds)]
    plan = ChainWalk().plan(replace(request, spacing="linear"))
    scale = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, request.height // scale, request.width // scale)
    images = []
    for point in plan:
        segment, t = int(point["segment"]), float(point["t"])
        start, end = segment, (segment + 1) % len(request.prompts)
        cond_a, uncond = pipe.encode_prompt(request.prompts[start], device, 1, guided, request.negative_prompt or None)
        cond_b, _ = pipe.encode_prompt(request.prompts[end], device, 1, guided, request.negative_prompt or None)
        noise_a = draw_noise(seeds[start], shape, cond_a.dtype, device)
        noise_b = draw_noise(seeds[end], shape, cond_a.dtype, device)
        generator = torch.Generator("cpu").manual_seed(seeds[start] if t < 0.5 else seeds[end])
        torch.randn(shape, generator=generator, dtype=cond_a.dtype)  # as the engine's step generators
        output = pipe(
            prompt_embeds=interpolate(cond_a, cond_b, t, request.interp),
            negative_prompt_embeds=uncond if guided else None,
            latents=interpolate(noise_a, noise_b, t, request.noise_interp),
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            height=request.height,
            width=request.width,
            generator=generator,
            output_type="pil",
        )
        images.append(output.images[0])
    return images


def plain_render(pipe, prompt: str, seed: int, request: MorphRequest) -> Image.Image:
    """What plain diffusers renders for one prompt and seed (the endpoint reference)."""
    return pipe(
        prompt=prompt,
        negative_prompt=request.negative_prompt or None,
        generator=torch.Generator("cpu").manual_seed(seed),
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        height=request.height,
        width=request.width,
    ).images[0]


# ---------------------------------------------------------------- the three parts


def bench_speed(model: LoadedModel, base: MorphRequest, frame_counts: list[int], repeats: int) -> list[dict]:
    """Engine against one call per frame, alternating runs, best of `repeats` each."""
    pipe = model.pipe
    rows = []
    for frames in frame_counts:
        request = replace(base, frames=frames)
        runs: dict[str, list] = {"engine": [], "per-frame": []}
        engine_images = naive_images = None
        for _ in range(repeats):
            result, seconds, timers = timed(lambda: Morpher(model).render(request), pipe)
            runs["engine"].append((seconds, timers))
            engine_images = [frame.image for frame in result.frames]
            if frames <= 16 or not runs["per-frame"]:  # the slow way once is enough at 64 frames
                naive_images, seconds, timers = timed(lambda: naive_frames(pipe, request), pipe)
                runs["per-frame"].append((seconds, timers))
        difference = max(
            int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())
            for a, b in zip(engine_images, naive_images)
        )
        best = {name: min(values, key=lambda run: run[0]) for name, values in runs.items()}
        for name, (seconds, timers) in best.items():
            rows.append({
                "frames": frames,
                "method": name,
                "batch": request.batch_size or default_batch_size(model.device, request.width, request.height)
                if name == "engine" else 1,
                "seconds": seconds,
                "frames_per_s": frames / seconds,
                "unet_share": timers.seconds["unet"] / seconds,
                "vae_share": timers.seconds["vae_decode"] / seconds,
                "text_share": timers.seconds["text_encoder"] / seconds,
                "unet_calls": timers.calls["unet"],
                "text_encoder_calls": timers.calls["text_encoder"],
                "speedup": best["per-frame"][0] / seconds,
                "max_pixel_difference": difference,
            })
        print(f"  speed at {frames} frames: engine {best['engine'][0]:.2f} s, "
              f"per-frame {best['per-frame'][0]:.2f} s", file=sys.stderr)
    return rows


def bench_smoothness(model: LoadedModel, base: MorphRequest, pairs, seed_pairs) -> list[dict]:
    """Linear and even over every pair and seed pair: J, CV, R, cost, endpoint PSNR."""
    rows = []
    for prompts in pairs:
        for seeds in seed_pairs:
            request = replace(base, prompts=prompts, seeds=seeds)
            references = [plain_render(model.pipe, prompt, seed, request) for prompt, seed in zip(prompts, seeds)]
            row: dict[str, Any] = {"prompts": list(prompts), "seeds": list(seeds)}
            for spacing in ("linear", "even"):
                # A fresh, empty frame cache for each render: even denoises its own pilot, so its
                # time and cost are those of a first render, not one after the linear morph.
                morpher = Morpher(model, cache=FrameCache())
                began = time.perf_counter()
                result = morpher.render(replace(request, spacing=spacing))
                seconds = time.perf_counter() - began
                figures, record = result.manifest["metrics"], result.manifest["render"]
                ends = [result.frames[0].image, result.frames[-1].image]
                row[spacing] = {
                    "jump_ratio": figures["jump_ratio"],
                    "cv": figures["cv"],
                    "directness": figures["directness"],
                    "ssim_jump_ratio": figures["ssim"]["jump_ratio"],
                    "gaps": figures["gaps"],
                    "t": [frame.t for frame in result.frames],
                    "frames_considered": record["frames_considered"],
                    "cost_vs_plain": record["cost_vs_plain"],
                    "rounds": record["rounds"],
                    "seconds": seconds,
                    "endpoint_psnr": min(metrics.psnr(a, b) for a, b in zip(ends, references)),
                    "images": [frame.image for frame in result.frames],
                }
            rows.append(row)
            print(f"  {prompts[0]!r} -> {prompts[1]!r} seeds {seeds}: J {row['linear']['jump_ratio']:.2f} -> "
                  f"{row['even']['jump_ratio']:.2f} at {row['even']['cost_vs_plain']:.2f}x", file=sys.stderr)
    return rows


def scale_point(model: LoadedModel, request: MorphRequest) -> dict:
    """One render in this (fresh) process: time, UNet share, resident memory before and at peak."""
    Morpher(model).render(replace(request, frames=2, batch_size=1))  # warm-up, smallest footprint
    with peak_rss() as memory:
        _, seconds, timers = timed(lambda: Morpher(model).render(request), model.pipe)
    return {
        "frames": request.frames,
        "batch": request.batch_size or default_batch_size(model.device, request.width, request.height),
        "seconds": seconds,
        "per_frame_s": seconds / request.frames,
        "unet_share": timers.seconds["unet"] / seconds,
        "base_mib": memory["base"] / 2**20,
        "peak_mib": memory["peak"] / 2**20,
        "growth_mib": (memory["peak"] - memory["base"]) / 2**20,
    }


def bench_scale(spec: str | None, base: MorphRequest, frame_counts: list[int], batch_sizes: list[int],
                batch_frames: int, threads: int | None) -> dict:
    """Time and peak resident memory as frames grow (default batch), and as the batch grows.

    Each point runs in a fresh process, so one point's memory high-water mark does not
    hide the next one's (the allocator keeps freed memory for reuse).
    """
    import subprocess

    out: dict[str, list] = {"frames": [], "batch": []}
    for key, points in (
        ("frames", [(n, None) for n in frame_counts]),
        ("batch", [(batch_frames, b) for b in batch_sizes]),
    ):
        for frames, batch in points:
            command = [sys.executable, "-m", "benchmarks.morph_bench", "--point", str(frames), str(batch or 0),
                       "--steps", str(base.steps)]
            command += (["--model", spec] if spec else []) + (["--threads", str(threads)] if threads else [])
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            out[key].append(row)
            print(f"  scale: {frames} frames, batch {row['batch']}: {row['seconds']:.2f} s, "
                  f"peak {row['peak_mib']:.0f} MiB", file=sys.stderr)
    return out


# ---------------------------------------------------------------- reporting


def median(values) -> float:
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else float("nan")


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import diffusers

    return {
        "cpu": cpu,
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def targets(speed: list[dict], smooth: list[dict]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for the three targets."""
    lin = median(row["linear"]["jump_ratio"] for row in smooth)
    even = median(row["even"]["jump_ratio"] for row in smooth)
    cost = max(row["even"]["cost_vs_plain"] for row in smooth)
    slower = median(time_ratio(row) for row in smooth)
    out = [(
        "median J of even < 1.5 and <= half of linear's, at <= 2x render cost",
        f"{even:.2f} vs {lin:.2f} (ratio {even / lin:.2f}), cost <= {cost:.2f}x frames "
        f"(median time {slower:.2f}x)",
        even < 1.5 and even <= lin / 2 and cost <= EVEN_BUDGET,
    )]
    at = {row["frames"]: row for row in speed if row["method"] == "engine"}
    if 16 in at:
        out.append(("batched >= 1.5x faster than one call per frame at 16 frames",
                    f"{at[16]['speedup']:.2f}x", at[16]["speedup"] >= 1.5))
    largest = max(at)
    out.append((f"share of render time inside the UNet >= 80% at {largest} frames",
                f"{at[largest]['unet_share']:.0%}", at[largest]["unet_share"] >= 0.8))
    return out


def markdown(info: dict, base: MorphRequest, speed: list[dict], smooth: list[dict], scale: dict,
             command: str) -> str:
    """The BENCHMARKS.md part: machine, command, tables, plots."""
    m = info["machine"]
    parts = [
        START,
        "## Speed, smoothness and scale",
        "",
        f"`{command}` ({m['date']}; {m['cpu']}, {m['cores_usable']} usable cores, {m['torch_threads']} torch threads, "
        f"{m['memory_gib']} GiB; Python {m['python']}, torch {m['torch']}, diffusers {m['diffusers']}; CPU, float32). "
        f"Model `{info['model']}` (weights {info['fingerprint'][:12]}), {base.width}x{base.height}, {base.steps} steps, "
        f"guidance {base.guidance}, scheduler {info['scheduler']}. Raw figures: `benchmarks/morph_bench.json`.",
        "",
        "### Targets",
        "",
        table(["target", "measured", "met"], [[name, value, "yes" if ok else "**no**"]
                                              for name, value, ok in targets(speed, smooth)]),
        "",
        "### 1. Speed: batched engine against one pipeline call per frame",
        "",
        "Same model, same frames (same t, noise and embeddings; the largest pixel difference between the two "
        "ways is shown, batching changes float rounding only), measured in one run, best of the repeats. "
        "*Per-frame* is how other latent-walk tools work: for every frame both prompts are encoded again and "
        "one image goes through the pipeline. Shares are of wall time, timed with forward hooks.",
        "",
        table(
            ["frames", "method", "batch", "time (s)", "frames/s", "speed-up", "UNet", "VAE decode", "text encoder",
             "UNet calls", "text encoder calls", "max pixel diff"],
            [[row["frames"], row["method"], row["batch"], f"{row['seconds']:.2f}", f"{row['frames_per_s']:.1f}",
              f"{row['speedup']:.2f}x", f"{row['unet_share']:.0%}", f"{row['vae_share']:.0%}",
              f"{row['text_share']:.1%}", row["unet_calls"], row["text_encoder_calls"], row["max_pixel_difference"]]
             for row in speed],
        ),
        "",
        "### 2. Smoothness: linear against even spacing",
        "",
        f"{len(smooth)} morphs ({len({tuple(row['prompts']) for row in smooth})} prompt pairs x "
        f"{len({tuple(row['seeds']) for row in smooth})} seed pairs, "
        f"one seed per keyframe), {base.frames} frames each. J = largest gap / mean gap (1 is perfectly even), "
        "CV = std / mean of the gaps, R = path length / keyframe-to-keyframe distance, all on pixel RMSE; "
        "J(SSIM) on 1 - SSIM. Cost = frames denoised, pilot included, over a plain render's frames "
        "(budget: at most 2x); time = wall time of the even render over the linear one, each from an empty "
        "frame cache (even's refinement rounds are small batches, so time grows more than cost). "
        "Endpoint PSNR: first and last frames against plain `pipe(prompt=...)` renders "
        "(inf = bit-equal).",
        "",
        table(
            ["prompts", "seeds", "J linear", "J even", "CV linear", "CV even", "R linear", "R even",
             "J(SSIM) linear", "J(SSIM) even", "cost even", "time even", "even: t-width of its widest gap",
             "endpoint PSNR (dB)"],
            [[f"{row['prompts'][0]} -> {row['prompts'][1]}", " ".join(map(str, row["seeds"])),
              f"{row['linear']['jump_ratio']:.2f}", f"{row['even']['jump_ratio']:.2f}",
              f"{row['linear']['cv']:.2f}", f"{row['even']['cv']:.2f}",
              f"{row['linear']['directness']:.2f}", f"{row['even']['directness']:.2f}",
              f"{row['linear']['ssim_jump_ratio']:.2f}", f"{row['even']['ssim_jump_ratio']:.2f}",
              f"{row['even']['cost_vs_plain']:.2f}x", f"{time_ratio(row):.2f}x", f"{widest_dt(row['even']):.4f}",
              _db(min(row["linear"]["endpoint_psnr"], row["even"]["endpoint_psnr"]))] for row in smooth]
            + [["**median**", "", *[f"**{median(row[s][k] for row in smooth):.2f}**"
                                    for k in ("jump_ratio", "cv", "directness", "ssim_jump_ratio")
                                    for s in ("linear", "even")],
                f"**{median(row['even']['cost_vs_plain'] for row in smooth):.2f}x**",
                f"**{median(time_ratio(row) for row in smooth):.2f}x**", "",
                "min " + _db(min(min(row['linear']['endpoint_psnr'], row['even']['endpoint_psnr'])
                                 for row in smooth))]],
        ),
        "",
        "![Per-gap distances, linear against even](docs/bench_gaps.png)",
        "",
        f"Side by side (linear left, even right), {' -> '.join(showcase(smooth)['prompts'])}, seeds "
        f"{' '.join(map(str, showcase(smooth)['seeds']))} (the largest improvement): "
        "![linear vs even](docs/linear_vs_even.gif)",
        "",
        "### 3. Scale: time and peak memory",
        "",
        "Each point runs in a fresh process (model loaded, one 2-frame warm-up render); peak RSS is the "
        "process's resident memory sampled every 2 ms during the render, growth is peak minus the RSS "
        "just before it.",
        "",
        table(["frames", "batch", "time (s)", "s / frame", "UNet share", "peak RSS (MiB)", "growth (MiB)"],
              [[row["frames"], row["batch"], f"{row['seconds']:.2f}", f"{row['per_frame_s']:.3f}",
                f"{row['unet_share']:.0%}", f"{row['peak_mib']:.0f}", f"{row['growth_mib']:.0f}"]
               for row in scale["frames"]]),
        "",
        table(["batch", "frames", "time (s)", "s / frame", "UNet share", "peak RSS (MiB)", "growth (MiB)"],
              [[row["batch"], row["frames"], f"{row['seconds']:.2f}", f"{row['per_frame_s']:.3f}",
                f"{row['unet_share']:.0%}", f"{row['peak_mib']:.0f}", f"{row['growth_mib']:.0f}"]
               for row in scale["batch"]]),
        "",
        "![Time and memory against frames and batch size](docs/bench_scale.png)",
        "",
        END,
    ]
    return "\n".join(parts)


def time_ratio(row: dict) -> float:
    """Wall time of the even render over the linear one (fewer frames per pipeline call cost time too)."""
    return row["even"]["seconds"] / row["linear"]["seconds"]


def widest_dt(result: dict) -> float:
    """How far apart in t the two frames around the widest gap are (tiny: the model cuts there)."""
    widest = int(np.argmax(result["gaps"]))
    return result["t"][widest + 1] - result["t"][widest]


def _db(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.1f}"


def after_the_title(text: str, section: str) -> str:
    """The first time, this benchmark's section goes right after the file's title."""
    lines = text.split("\n", 1)
    return lines[0] + "\n\n" + section + "\n\n" + (lines[1].lstrip("\n") if len(lines) > 1 else "")


def plot_gaps(smooth: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    example = showcase(smooth)
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for axis, spacing in zip(axes, ("linear", "even")):
        curves = [np.asarray(row[spacing]["gaps"]) / np.mean(row[spacing]["gaps"]) for row in smooth]
        for curve in curves:
            axis.plot(range(1, len(curve) + 1), curve, color="tab:blue" if spacing == "linear" else "tab:green",
                      alpha=0.3, linewidth=1)
        axis.plot(range(1, len(curves[0]) + 1), np.median(curves, axis=0), color="black", linewidth=2,
                  label="median")
        axis.axhline(1.5, color="grey", linestyle="--", linewidth=1, label="J = 1.5")
        axis.set_title(f"{spacing}: median J {median(row[spacing]['jump_ratio'] for row in smooth):.2f}")
        axis.set_xlabel("gap (frame i-1 to i)")
        axis.set_ylabel("gap / mean gap (pixel RMSE)")
        axis.set_ylim(0, max(4.0, max(curve.max() for curve in curves) * 1.05))
        axis.legend(loc="upper right", fontsize=8)
    for spacing, colour in (("linear", "tab:blue"), ("even", "tab:green")):
        axes[2].plot(example[spacing]["t"], marker="o", markersize=3, color=colour, label=spacing)
    axes[2].set_title(f"t of each frame: {' -> '.join(example['prompts'])}", fontsize=8)
    axes[2].set_xlabel("frame")
    axes[2].set_ylabel("t")
    axes[2].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_scale(scale: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    frames = scale["frames"]
    axes[0].plot([r["frames"] for r in frames], [r["seconds"] for r in frames], marker="o", label="time (s)")
    axes[0].set_xlabel("frames")
    axes[0].set_ylabel("seconds")
    twin = axes[0].twinx()
    twin.plot([r["frames"] for r in frames], [r["growth_mib"] for r in frames], marker="s", color="tab:red",
              label="memory growth (MiB)")
    twin.set_ylabel("memory growth (MiB)", color="tab:red")
    axes[0].set_title(f"time vs frames (batch {frames[0]['batch']})")
    batches = scale["batch"]
    axes[1].plot([r["batch"] for r in batches], [r["per_frame_s"] for r in batches], marker="o")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("batch size")
    axes[1].set_ylabel("seconds per frame")
    twin = axes[1].twinx()
    twin.plot([r["batch"] for r in batches], [r["growth_mib"] for r in batches], marker="s", color="tab:red")
    twin.set_ylabel("memory growth (MiB)", color="tab:red")
    axes[1].set_title(f"batch size ({batches[0]['frames']} frames)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def side_by_side_gif(row: dict, path: Path, scale: int = 3) -> None:
    """Linear left, even right, each frame scaled up (nearest neighbour: the real pixels), labelled."""
    from pipelines.media import write_media

    images = []
    for left, right in zip(row["linear"]["images"], row["even"]["images"]):
        width, height = left.width * scale, left.height * scale
        canvas = Image.new("RGB", (2 * width + 8, height + 18), (255, 255, 255))
        canvas.paste(left.resize((width, height), Image.NEAREST), (0, 18))
        canvas.paste(right.resize((width, height), Image.NEAREST), (width + 8, 18))
        draw = ImageDraw.Draw(canvas)
        draw.text((4, 3), f"linear  J {row['linear']['jump_ratio']:.1f}", fill=(0, 0, 0))
        draw.text((width + 12, 3), f"even  J {row['even']['jump_ratio']:.1f}", fill=(0, 0, 0))
        images.append(canvas)
    write_media(images, path, fps=6.0, loop=True)


def showcase(smooth: list[dict]) -> dict:
    """The morph whose jump ratio `even` lowers the most (linear J / even J)."""
    return max(smooth, key=lambda row: row["linear"]["jump_ratio"] / row["even"]["jump_ratio"])


def strip_images(rows: list[dict]) -> list[dict]:
    return [{**row, **{s: {k: v for k, v in row[s].items() if k != "images"} for s in ("linear", "even")}}
            for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.morph_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model spec (default: the bundled model)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=16, help="frames of the smoothness morphs (16)")
    parser.add_argument("--quick", action="store_true", help="few pairs, few frames: checks the script")
    parser.add_argument("--repeats", type=int, default=2, help="speed runs per method, best kept (2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-write", action="store_true", help="print only; write no files")
    parser.add_argument("--point", type=int, nargs=2, metavar=("FRAMES", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    model = load_model(args.model, device="cpu")
    model.pipe.set_progress_bar_config(disable=True)
    # resolved: the model's own size, so the naive baseline and the report know width and height
    base = Morpher(model).resolve(
        MorphRequest(prompts=PAIRS[0], seeds=SEED_PAIRS[0], frames=args.frames, steps=args.steps))
    if args.point:  # one scale point, in its own process (see bench_scale)
        frames, batch = args.point
        print(json.dumps(scale_point(model, replace(base, frames=frames, batch_size=batch or None))))
        return 0
    pairs, seed_pairs = (PAIRS[:2], SEED_PAIRS[:1]) if args.quick else (PAIRS, SEED_PAIRS)
    speed_frames = [8, 16] if args.quick else [16, 64]
    scale_frames = [4, 8] if args.quick else [8, 16, 32, 64]
    batch_sizes = [1, 4] if args.quick else [1, 2, 4, 8, 16]
    batch_frames = 8 if args.quick else 32
    if args.quick:
        base = replace(base, frames=min(base.frames, 8))

    # Warm-up: first calls pay for lazy initialisation in torch and diffusers.
    Morpher(model).render(replace(base, frames=3))
    naive_frames(model.pipe, replace(base, frames=2))

    began = time.perf_counter()
    print("1. speed", file=sys.stderr)
    speed = bench_speed(model, base, speed_frames, args.repeats)
    print("2. smoothness", file=sys.stderr)
    smooth = bench_smoothness(model, base, pairs, seed_pairs)
    print("3. scale", file=sys.stderr)
    scale = bench_scale(args.model, base, scale_frames, batch_sizes, batch_frames, args.threads)
    info = {
        "model": model.name,
        "fingerprint": model_fingerprint(model.pipe),
        "scheduler": type(model.pipe.scheduler).__name__,
        "machine": machine(),
        "wall_s": round(time.perf_counter() - began, 1),
    }
    command = "python -m benchmarks.morph_bench" + (" " + " ".join(argv if argv is not None else sys.argv[1:])
                                                     if (argv if argv is not None else sys.argv[1:]) else "")
    section = markdown(info, base, speed, smooth, scale, command.strip())
    print(section)
    print(f"wall time {info['wall_s']} s", file=sys.stderr)
    if not args.no_write:
        DOCS.mkdir(exist_ok=True)
        plot_gaps(smooth, DOCS / "bench_gaps.png")
        plot_scale(scale, DOCS / "bench_scale.png")
        side_by_side_gif(showcase(smooth), DOCS / "linear_vs_even.gif")
        raw = {"info": info, "request": base.__dict__, "speed": speed, "smoothness": strip_images(smooth),
               "scale": scale}
        (ROOT / "benchmarks" / "morph_bench.json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
        replace_section(ROOT / "BENCHMARKS.md", section, START, END, after_the_title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
