"""The GPU benchmark's picture figures and Markdown table (see benchmarks/gpu_bench.py).

Figures follow `benchmarks/speed_bench.py`: PSNR of each method's frames against the
engine's eager frames, keyframes against plain `pipe(prompt=...)` renders, and the
morph's jump ratio J, so a GPU run and a CPU run read the same way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.speed_methods import PEER_BATCH
from benchmarks.speed_report import table
from pipelines import metrics
from pipelines.request import MorphRequest

REFERENCE = "engine, eager"  # the exact frames every method is compared with
BASELINE = f"stock batched {PEER_BATCH}"  # what the peers do: speed-ups are against it


def plain_keyframes(pipe: Any, request: MorphRequest) -> list[Image.Image]:
    """What plain diffusers renders for each prompt and its seed: the keyframes' reference."""
    with torch.no_grad():
        return [pipe(prompt=prompt, negative_prompt=request.negative_prompt or None,
                     generator=torch.Generator("cpu").manual_seed(seed), num_inference_steps=request.steps,
                     guidance_scale=request.guidance, height=request.height, width=request.width).images[0]
                for prompt, seed in zip(request.prompts, request.seeds)]


def _finite(value: float) -> float | None:
    """JSON has no nan or inf: equal pictures (inf dB) and undefined ratios (nan) become None."""
    return round(value, 3) if math.isfinite(value) else None


def psnr_figures(images: list, reference: list) -> dict:
    """Mean and worst PSNR over the frames that differ, and how many are equal to the reference."""
    values = [metrics.psnr(a, b) for a, b in zip(images, reference)]
    finite = [value for value in values if math.isfinite(value)]
    return {"mean_db": _finite(float(np.mean(finite))) if finite else None,
            "min_db": _finite(min(finite)) if finite else None, "equal_frames": len(values) - len(finite)}


def add_quality(rows: list[dict], images: dict[str, list], plain: list[Image.Image]) -> list[dict]:
    """Each timed row with its speed-up against the stock batched pipeline and its picture figures."""
    reference = images[REFERENCE]
    baseline = next(row["seconds"] for row in rows if row["method"] == BASELINE)
    for row in rows:
        frames = images[row["method"]]
        row.update(vs_stock_batched=round(baseline / row["seconds"], 3),
                   psnr_vs_exact=psnr_figures(frames, reference),
                   keyframe_psnr_db=[_finite(metrics.psnr(frames[0], plain[0])),
                                     _finite(metrics.psnr(frames[-1], plain[-1]))],
                   jump_ratio=_finite(metrics.jump_ratio(metrics.frame_gaps(frames))))
    return rows


def _db(value: float | None, equal: bool = False) -> str:
    if value is None:
        return "equal" if equal else "-"
    return f"{value:.1f}"


def _psnr_cell(figures: dict) -> str:
    if figures["mean_db"] is None:  # no frame differs: the reference itself, or bit-equal frames
        return "equal"
    return f"{figures['mean_db']:.1f} / {figures['min_db']:.1f}"


def _row_cells(row: dict) -> list[Any]:
    peak = "n/a (CPU)" if row["peak_gib"] is None else f"{row['peak_gib']:.2f}"
    # a keyframe's PSNR is None only when it equals the plain render (inf dB)
    keyframes = " / ".join(_db(value, equal=True) for value in row["keyframe_psnr_db"])
    jump = "-" if row["jump_ratio"] is None else f"{row['jump_ratio']:.2f}"
    return [row["method"], "exact" if row["exact"] else "approximate", f"{row['frames_per_s']:.2f}",
            f"{row['seconds']:.2f}", f"{row['vs_stock_batched']:.2f}x", f"{row['warmup_s']:.1f}", peak,
            _psnr_cell(row["psnr_vs_exact"]), keyframes, jump]


def markdown(result: dict[str, Any]) -> str:
    """The table of one run, with the settings it was run with."""
    m, a = result["machine"], result["args"]
    where = (f"{m['gpu']} ({m['gpu_memory_gib']} GiB, CUDA {m['cuda']})" if m["gpu"]
             else f"CPU, {m['torch_threads']} threads")
    header = (f"`{result['command']}` ({m['date']}; {where}; torch {m['torch']}). Model `{result['model']}`, "
              f"{result['dtype']}, {a['frames']} frames of {a['size']}x{a['size']}, {a['steps']} step(s), "
              f"guidance {a['guidance']}, VAE slicing {'on' if a['vae_slicing'] else 'off'}. Every method renders "
              f"the same frames; one untimed warm-up morph (with any compile), then one timed morph.")
    columns = ["method", "kind", "frames/s", "morph (s)", f"vs {BASELINE}", "warm-up incl. compile (s)",
               "peak memory (GiB)", "PSNR vs the engine's eager frames, mean / worst (dB)",
               "keyframes vs plain (dB)", "J"]
    body = table(columns, [_row_cells(row) for row in result["rows"]])
    return f"{header}\n\n{body}"
