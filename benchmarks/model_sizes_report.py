"""The BENCHMARKS.md section of `benchmarks.model_sizes`: parameter counts, CPU figures, a GPU memory estimate."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

START = "<!-- model-sizes:start (written by python -m benchmarks.model_sizes) -->"
END = "<!-- model-sizes:end -->"
GIB = 2**30
GPU_BUDGET_GIB = 8.0
# Allowance for the CUDA context, cuDNN workspaces and allocator slack: max_memory_allocated does
# not see them, nvidia-smi does. A rule of thumb, not a measurement.
CUDA_OVERHEAD_GIB = 0.8
ACTIVATION_MARGIN = 2.0  # the estimate's activations are doubled before a setting is called fitting
MEASURED = ["sd15-batch", "sd21", "sd-turbo", "sdxl"]


def machine() -> dict:
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import diffusers
    import torch

    return {"cpu": cpu, "cores_usable": len(os.sched_getaffinity(0)),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
            "python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def parameter_rows() -> tuple[list[list[Any]], dict[str, dict[str, int]]]:
    """Parameters per component of each model (meta device: no memory used)."""
    from benchmarks.sd_configs import MODELS, count_parameters

    rows, counts = [], {}
    for key, spec in MODELS.items():
        count = counts[key] = count_parameters(spec)
        text = sum(value for name, value in count.items() if name.startswith("text"))
        total = sum(count.values())
        rows.append([spec.name, f"{count['unet'] / 1e6:.1f} M", f"{count['vae'] / 1e6:.1f} M", f"{text / 1e6:.1f} M",
                     f"{total / 1e6:.1f} M", f"{total * 4 / GIB:.2f}", f"{total * 2 / GIB:.2f}"])
    return rows, counts


def activation(run: dict, phase: str) -> float:
    """GiB above the weights at the peak of a phase (glibc may keep freed pages: an upper bound)."""
    return max(0.0, run["peak_rss_gib"].get(phase, 0.0) - run["weights_rss_gib"])


def ok(runs: dict, name: str) -> dict | None:
    run = runs.get(name)
    return run if run and "error" not in run else None


def vae_figures(runs: dict, size: int) -> tuple[float, float, str] | None:
    """(CPU s, activation GiB, how) of decoding one frame at `size`: measured, or scaled from 512 px by pixels."""
    measured = {512: ok(runs, "sd15-batch"), 1024: ok(runs, "sdxl-vae")}
    if measured.get(size):
        run = measured[size]
        return run["seconds"]["vae"], activation(run, "vae"), "measured"
    base = measured[512]
    if not base:
        return None
    scale = (size / 512) ** 2  # convolutions dominate and scale with pixels (the mid-block attention grows faster)
    return base["seconds"]["vae"] * scale, activation(base, "vae") * scale, "scaled from 512 px"


def peak_text(run: dict, vae: tuple[float, float, str] | None) -> str:
    """Weights plus the larger of the UNet step's and the one-frame decode's activations."""
    unet = activation(run, "unet")
    if not vae or vae[1] <= unet:
        return f"{run['peak_rss_gib']['unet']:.1f}"
    return f"{run['weights_rss_gib'] + vae[1]:.1f}" + (" (VAE scaled)" if vae[2] != "measured" else "")


def measured_rows(runs: dict) -> list[list[Any]]:
    from benchmarks.sd_configs import MODELS

    rows = []
    for name in MEASURED:
        spec = MODELS[name.replace("-batch", "")]
        run = ok(runs, name)
        if not run:
            why = (runs.get(name) or {}).get("error", "not run within the time box")
            rows.append([spec.name, f"{spec.size} px", f"not measured: {why}"] + [""] * 6)
            continue
        frames = run["config"]["frames"]
        unet_call = run["seconds"]["unet"] / max(run["unet_calls"], 1)
        vae = vae_figures(runs, run["size"])
        per_frame = unet_call * spec.steps / frames + (vae[0] if vae else 0.0)
        rows.append([spec.name, f"{run['size']} px", f"{frames} frame{'s' * (frames > 1)}, {run['rows']} UNet rows",
                     f"{unet_call:.0f}", f"{vae[0]:.0f} ({vae[2]})" if vae else "not measured",
                     f"{per_frame / 60:.1f} min ({spec.steps} step{'s' * (spec.steps > 1)})",
                     f"{run['weights_rss_gib']:.1f}", peak_text(run, vae),
                     f"UNet {activation(run, 'unet'):.2f}" + (f" / VAE {vae[1]:.2f}" if vae else "")])
    return rows


def option_rows(runs: dict) -> list[list[Any]]:
    """What batching, slicing, tiling and half precision change, SD 1.5 at 512 px (128 px for the dtypes)."""
    base, rows = ok(runs, "sd15-batch"), []
    if not base:
        return rows
    unet_base = base["seconds"]["unet"] / base["config"]["frames"]
    rows.append(["2-frame batch (4 UNet rows), SDPA attention (the default)", f"{unet_base:.0f} s",
                 f"UNet {activation(base, 'unet'):.2f}", "reference"])
    if one := ok(runs, "sd15-per-frame"):
        rows.append(["one call per frame (2 UNet rows)", f"{one['seconds']['unet']:.0f} s "
                     f"({one['seconds']['unet'] / unet_base:.2f}x)", f"UNet {activation(one, 'unet'):.2f}",
                     "batching on a CPU only amortises per-call overhead"])
    if sliced := ok(runs, "sd15-attention-slicing"):
        per = sliced["seconds"]["unet"] / sliced["config"]["frames"]
        rows.append(["attention slicing (`pipe.enable_attention_slicing()`)", f"{per:.0f} s ({per / unet_base:.2f}x)",
                     f"UNet {activation(sliced, 'unet'):.2f}", "swaps SDPA for sliced attention"])
    rows.append(["VAE decode, one frame (what VAE slicing does per frame)", f"{base['seconds']['vae']:.0f} s / frame",
                 f"VAE {activation(base, 'vae'):.2f}", "`pipe.vae.enable_slicing()`"])
    if batch := ok(runs, "sd15-vae-batch"):
        rows.append(["VAE decode, 2 frames at once (no slicing)", f"{batch['seconds']['vae'] / 2:.0f} s / frame",
                     f"VAE {activation(batch, 'vae'):.2f}", "activations grow with the frames decoded together"])
    if tiled := ok(runs, "sd15-vae-tiling"):
        rows.append(["VAE tiling, 256 px tiles, one frame", f"{tiled['seconds']['vae']:.0f} s / frame",
                     f"VAE {activation(tiled, 'vae'):.2f}", "the default tile is the native size: a no-op there"])
    if dtypes := ok(runs, "sd15-dtypes-128px"):
        fp32 = dtypes["seconds"]["unet_float32"]
        for name in ("float16", "bfloat16"):
            if (unet := dtypes["seconds"].get(f"unet_{name}")) is not None:
                rows.append([f"{name} UNet (measured at 128 px)", f"{unet / fp32:.1f}x fp32's time",
                             f"weights {dtypes['weights_rss_gib'][name]:.1f} GiB resident "
                             f"(fp32: {dtypes['weights_rss_gib']['float32']:.1f})", "no native half kernels (AVX2)"])
    return rows


def gpu_estimate(runs: dict, counts: dict) -> tuple[list[list[Any]], str]:
    """SD 1.5, 512 px, fp16 on a GPU, from the measured CPU activations: rows and the recommended setting.

    UNet activations are fitted linearly in UNet rows from the 2-row (one frame with CFG) and
    4-row (2 frames) CPU peaks and halved for fp16; the VAE decode's per-frame activation is
    the measured one-frame decode, halved. With VAE slicing the decode holds one frame at a time.
    """
    one, two = ok(runs, "sd15-per-frame"), ok(runs, "sd15-batch")
    if not one or not two:
        return [], "not computed: the SD 1.5 runs are missing"
    slope = (activation(two, "unet") - activation(one, "unet")) / 2  # GiB per UNet row, fp32
    intercept = activation(one, "unet") - 2 * slope
    vae_frame = activation(two, "vae") / 2  # its decode is one frame; fp16
    weights = sum(counts["sd15"].values()) * 2 / GIB
    rows, best = [], {"sliced": None, "unsliced": None}
    for batch in (1, 2, 4, 8):
        unet = max(0.0, intercept + slope * 2 * batch) / 2
        peaks = {"unsliced": max(unet, vae_frame * batch), "sliced": max(unet, vae_frame)}
        rows.append([batch, 2 * batch, f"{weights:.2f}", f"{unet:.2f}", f"{vae_frame * batch:.2f}",
                     f"{weights + peaks['unsliced'] + CUDA_OVERHEAD_GIB:.1f}",
                     f"{weights + peaks['sliced'] + CUDA_OVERHEAD_GIB:.1f}"])
        for kind, peak in peaks.items():
            # activations counted twice: room for the estimate's error (CPU kernels are not cuDNN's)
            if weights + CUDA_OVERHEAD_GIB + ACTIVATION_MARGIN * peak <= GPU_BUDGET_GIB:
                best[kind] = (batch, weights + CUDA_OVERHEAD_GIB + peak)
    if not best["sliced"]:
        return rows, "no batch size fits the estimate"
    advice = (f"batch size {best['sliced'][0]} (2 x {best['sliced'][0]} UNet rows with guidance), fp16, SDPA "
              f"attention (torch's default), VAE slicing on (`pipe.vae.enable_slicing()`): about "
              f"{best['sliced'][1]:.1f} GiB")
    if best["unsliced"]:
        advice += (f"; without VAE slicing (the engine turns it on for CUDA) batch size {best['unsliced'][0]}, about "
                   f"{best['unsliced'][1]:.1f} GiB")
    return rows, advice + " (a setting counts as fitting when it still fits with its activations doubled)"


def markdown(stored: dict) -> str:
    runs, info = stored.get("runs", {}), stored.get("machine", {})
    params, counts = parameter_rows()
    gpu_rows, advice = gpu_estimate(runs, counts)
    threads = {run.get("torch_threads") for run in runs.values() if "torch_threads" in run} or {"?"}
    parts = [START, "## Real model sizes: SD 1.5, SD 2.1, SD-Turbo, SDXL", "",
             f"`OMP_NUM_THREADS=1 python -m benchmarks.model_sizes` ({info.get('date', '?')}; {info.get('cpu', '?')}, "
             f"{info.get('cores_usable', '?')} cores shared with other jobs, "
             f"{'/'.join(map(str, threads))} torch thread; "
             f"{info.get('memory_gib', '?')} GiB; Python {info.get('python', '?')}, torch {info.get('torch', '?')}, "
             f"diffusers {info.get('diffusers', '?')}). Models built from their published configs "
             "(`benchmarks/sd_configs.py`) with random weights: real sizes and compute, pictures of noise. "
             "Raw figures: `benchmarks/model_sizes.json`.", "",
             "### Parameters (on paper)", "",
             table(["model", "UNet", "VAE", "text encoder(s)", "total", "fp32 GiB", "fp16 GiB"], params), "",
             "### Measured on this CPU: one denoising step of a 2-frame batch at the native size", "",
             table(["model", "size", "batch", "UNet s / step", "VAE decode s / frame", "per frame, extrapolated",
                    "weights resident (GiB)", "peak resident (GiB)", "activations above weights (GiB)"],
                   measured_rows(runs)), "",
             "### What the options change (SD 1.5, 512 px, fp32, CPU)", "",
             table(["setting", "CPU time per frame (and step)", "activation memory (GiB)", "note"],
                   option_rows(runs)), "",
             "### A 16-frame 512 px SD 1.5 morph on a GPU in fp16 (estimate)", "",
             table(["frames per call", "UNet rows (CFG)", "weights", "UNet activations", "VAE decode, unsliced",
                    "total, unsliced (GiB)", "total, VAE slicing (GiB)"], gpu_rows), "",
             f"**Fits in {GPU_BUDGET_GIB:.0f} GB:** {advice}.", "", "### How to read these figures", "",
             *notes(runs), "", END]
    return "\n".join(parts)


def notes(runs: dict) -> list[str]:
    """The honest small print, with the figures it refers to."""
    done = [run for run in runs.values() if "error" not in run and "wall_seconds" in run]
    cpu = sum(sum(run["seconds"].values()) for run in done)
    wall = sum(sum(run["wall_seconds"].values()) for run in done)
    missing = [name for name in ("sd15-batch", "sd15-per-frame", "sd-turbo", "sd21", "sdxl", "sd15-dtypes-128px",
                                 "sd15-attention-slicing", "sd15-vae-batch", "sd15-vae-tiling", "sdxl-vae")
               if not ok(runs, name)]
    lines = [
        "- **Times are CPU seconds of the one torch thread** (`time.thread_time`), i.e. what the work costs on a "
        "free core. The two cores were shared with a training job and other test runs: the same phases took "
        f"{wall / cpu:.1f}x as long on the wall clock ({wall / 60:.0f} min for {cpu / 60:.0f} min of CPU)." if cpu else
        "- No configuration finished.",
        "- **One denoising step was run**; per-frame times for the usual step counts (SD 1.5 and 2.1: 25, "
        "SD-Turbo: 1, SDXL: 30) are that step's UNet time x steps, shared by the frames of the batch, plus one "
        "VAE decode. Text encoding happens once per morph (under 1 s here) and is left out.",
        "- **Memory is resident set size** sampled every 5 ms (and `ru_maxrss`), minus the resident size right "
        "after the weights were built: weights include about 0.4 GiB of Python, torch and library pages. CPU "
        "attention is torch's SDPA (a fused kernel that never holds the full attention matrix), as on a GPU.",
        "- **SDXL was measured with one frame (2 UNet rows)**: its 2-frame step would take about 8 minutes of one "
        "thread and its peak was already 17.5 of this machine's 23.5 GiB; on a CPU the UNet time per row hardly "
        "changes with the batch (SD 2.1: 87 s for 2 rows, 142 s for 4), so its 2-frame step is about twice the "
        "one-frame step. All four models share one VAE architecture: its decode was measured at 512 px "
        "(in the SD 1.5 run) and 1024 px; the 768 px figures are scaled from 512 px by pixel count.",
        "- **fp16 and bf16 on this CPU** (AVX2, no native half-precision kernels) were measured at 128 px only: "
        "the ratio to fp32 at the same size is the figure to read. On a CUDA GPU fp16 is the fast path "
        "(`pipelines.loading` picks it); `benchmarks/gpu_bench.py` measures it there.",
        "- **The GPU table is an estimate, not a GPU measurement**: weights are parameters x 2 bytes; UNet "
        "activations are the CPU fp32 activation peaks (1 frame = 2 rows, 2 frames = 4 rows), fitted as a line "
        "in rows and halved for fp16; the VAE decode is the measured one-frame decode peak, halved, times the "
        f"frames decoded together; {CUDA_OVERHEAD_GIB} GiB is added for the CUDA context and allocator slack. A morph "
        "renders its frames batch by batch, so 16 frames need no more memory than one batch. To confirm on a "
        "GPU: `python -m benchmarks.gpu_bench --model runwayml/stable-diffusion-v1-5 --steps 25 --guidance 7.5 "
        "--batch-size 8 --compile off` (peak from `torch.cuda.max_memory_allocated`).",
    ]
    if (batch := ok(runs, "sd15-vae-batch")) and (one := ok(runs, "sd15-batch")):
        lines.append(f"- Decoding 2 frames at once took {activation(batch, 'vae'):.2f} GiB against "
                     f"{activation(one, 'vae'):.2f} GiB for one: multiplying the one-frame decode by the frames, "
                     "as the GPU table does, overstates the unsliced decode (a safe side).")
    if missing:
        lines.append("- **Not measured within the time box:** " + ", ".join(f"`{name}`" for name in missing) +
                     " (`python -m benchmarks.model_sizes --only NAME ...` adds them).")
    return lines
