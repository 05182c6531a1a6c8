"""Speed at equal work: this engine against the stock pipeline the peers call, measured in one run.

    python -m benchmarks.speed_bench                   # both bundled models, 16 and 64 frames, writes BENCHMARKS.md
    python -m benchmarks.speed_bench --quick --no-write --models shapes64 --frames 4 --no-sd-block

For each bundled model and frame count, every method of `benchmarks/speed_methods.py`
renders the same frames (2-prompt chain, linear spacing, 20 steps, guidance 5, the
model's own size): the stock pipeline one call per frame and batched 4 frames a call
(what the peers do), this engine with its exact speed-ups off and on, and its
approximate modes. Methods alternate within each repeat and the best of the repeats
counts (the machine's speed drifts between minutes). Pictures are compared with the
engine's eager frames (PSNR), keyframes with plain `pipe(prompt=...)` renders, and the
morph's jump ratio J is reported for each method.

Apart: the UNet alone at the engine's batch (8 rows), eager and compiled, as a fraction
of the machine's measured peak (a 2048^3 float32 matmul on the same threads), for both
bundled models and a real-size SD 1.5 UNet block (its first down block at 512 px); and
the compile's cost, cold (an empty on-disk cache) and warm (a second process).

Writes benchmarks/speed_bench.json, the section between the speed-bench markers of
BENCHMARKS.md and docs/speed_per_frame.png (unless --no-write). Keeps the CPU busy for
tens of minutes: run it on a quiet machine, nothing else beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import speed_methods, speed_report  # noqa: E402
from benchmarks.morph_bench import machine, plain_render  # noqa: E402
from benchmarks.speed_methods import Method, methods  # noqa: E402
from benchmarks.speed_unet import openvino_prepare_s, unet_rows  # noqa: E402
from pipelines import metrics, threads  # noqa: E402
from pipelines.loading import LoadedModel, load_model  # noqa: E402
from pipelines.request import MorphRequest  # noqa: E402
from pipelines.compiling import COMPILE_CACHE_ENV  # noqa: E402

PROMPTS = {"scenes": ("a sunset over the ocean", "a sunrise over mountains"),
           "shapes64": ("a red circle", "a blue square")}
JSON_PATH = ROOT / "benchmarks" / "speed_bench.json"
REFERENCE = "engine, eager"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["shapes64", "scenes"])
    parser.add_argument("--frames", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat, 4 steps: checks the script")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--no-sd-block", action="store_true", help="leave out the real-size SD 1.5 UNet block")
    parser.add_argument("--no-write", action="store_true", help="print only; write no file")
    parser.add_argument("--report", action="store_true", help="only write the report again from the saved figures")
    parser.add_argument("--warm-compile", metavar="MODEL", help=argparse.SUPPRESS)  # the second process
    return parser.parse_args(argv)


def psnr_figures(images: list, reference: list) -> dict:
    values = [metrics.psnr(a, b) for a, b in zip(images, reference)]
    finite = [value for value in values if np.isfinite(value)]
    return {"mean_db": float(np.mean(finite)) if finite else None, "min_db": min(finite) if finite else None,
            "equal_frames": len(values) - len(finite)}


def render_all(model: LoadedModel, request: MorphRequest, found: list[Method], repeats: int) -> dict[str, dict]:
    """Each method's best time over `repeats` (alternating) and its first run's pictures."""
    runs: dict[str, dict] = {method.name: {"seconds": [], "images": None} for method in found}
    for method in found:  # untimed: compiles (batches of 8 frames, then 4: the batch dimension becomes dynamic)
        for frames in (8, 4):
            method.render(model, replace(request, frames=frames))
    for repeat in range(repeats):
        for method in found:
            if method.name == "stock per-frame" and request.frames > 16 and repeat:
                continue  # the slow way once is enough at 64 frames
            began = time.perf_counter()
            images = method.render(model, request)
            runs[method.name]["seconds"].append(time.perf_counter() - began)
            runs[method.name]["images"] = runs[method.name]["images"] or images
            print(f"    {method.name}: {runs[method.name]['seconds'][-1]:.2f} s", file=sys.stderr)
    return runs


def rows_for(model: LoadedModel, request: MorphRequest, found: list[Method], runs: dict) -> list[dict]:
    reference = runs[REFERENCE]["images"]
    plain = [plain_render(model.pipe, prompt, seed, request) for prompt, seed in zip(request.prompts, request.seeds)]
    batched = min(runs["stock batched 4"]["seconds"])
    rows = []
    for method in found:
        images, best = runs[method.name]["images"], min(runs[method.name]["seconds"])
        rows.append({
            "model": model.name, "frames": request.frames, "method": method.name, "exact": method.exact,
            "note": method.note, "seconds": best, "seconds_all": runs[method.name]["seconds"],
            "s_per_frame": best / request.frames, "vs_stock_batched": batched / best,
            "psnr_vs_exact": psnr_figures(images, reference),
            "keyframe_psnr_db": [metrics.psnr(images[0], plain[0]), metrics.psnr(images[-1], plain[-1])],
            "jump_ratio": metrics.jump_ratio(metrics.frame_gaps(images)),
        })
    return rows


def bench_model(name: str, args: argparse.Namespace) -> list[dict]:
    model = load_model(name)
    found = methods(model.device, compile_too=not args.no_compile)
    rows = []
    for frames in args.frames:
        request = MorphRequest(prompts=PROMPTS[name], seeds=(0, 1), frames=frames, steps=args.steps)
        request = replace(request, size=(model.pipe.unet.config.sample_size * model.pipe.vae_scale_factor,) * 2)
        print(f"  {name}, {frames} frames", file=sys.stderr)
        began = time.perf_counter()
        runs = render_all(model, request, found, 1 if args.quick else args.repeats)
        rows += rows_for(model, request, found, runs)
        print(f"  ({time.perf_counter() - began:.0f} s)", file=sys.stderr)
    return rows


def compile_cost(name: str, cold_cache: str) -> dict:
    """Seconds the first compiled render spends compiling: in this process with an empty cache (cold),
    then in a new process reading the cache this one wrote (warm)."""
    figures = {}
    for label in ("cold", "warm"):
        command = [sys.executable, "-m", "benchmarks.speed_bench", "--warm-compile", name]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, COMPILE_CACHE_ENV: cold_cache}, check=True)
        figures[label] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def first_compiled_render(name: str) -> dict:
    """In this process: a 4-frame render compiled, then the same again; the difference is the compile."""
    from benchmarks.speed_methods import engine
    from pipelines.speed import SpeedSettings

    model = load_model(name)
    request = MorphRequest(prompts=PROMPTS[name], seeds=(0, 1), frames=4)
    render = engine(SpeedSettings.for_device(model.device, compile="on"))
    began = time.perf_counter()
    render(model, request)
    first = time.perf_counter() - began
    began = time.perf_counter()
    render(model, request)
    again = time.perf_counter() - began
    return {"first_s": first, "again_s": again, "compile_s": first - again}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        report(json.loads(JSON_PATH.read_text()), write=True)
        return 0
    threads.configure(None)
    if args.warm_compile:
        print(json.dumps(first_compiled_render(args.warm_compile)))
        return 0
    if args.quick:
        args.steps, args.repeats = 4, 1
    began = time.perf_counter()
    result: dict[str, Any] = {"machine": machine(), "steps": args.steps, "repeats": args.repeats, "models": {}}
    for name in args.models:
        entry: dict[str, Any] = {"rows": bench_model(name, args)}
        entry["lane_start_s"] = {("compiled" if compiled else "eager"): seconds
                                 for (model, compiled), seconds in speed_methods.lane_start_s.items()
                                 if model.split(":")[-1] == name}  # the loaded model is "bundled:<name>"
        entry["unet"] = unet_rows(load_model(name).pipe.unet, compile_too=not args.no_compile)
        entry["openvino_prepare_s"] = None if args.no_compile else openvino_prepare_s(load_model(name).pipe.unet)
        if not args.no_compile and not args.quick:
            with tempfile.TemporaryDirectory(prefix="speed-bench-cache-") as empty_cache:
                entry["compile_cost"] = compile_cost(name, empty_cache)
        result["models"][name] = entry
    if not args.no_sd_block:
        from benchmarks.speed_unet import sd_block_rows

        result["sd15_block"] = sd_block_rows(compile_too=not args.no_compile)
    result["seconds"] = time.perf_counter() - began
    if not args.no_write:  # the figures first: the report can be made again from them (--report)
        JSON_PATH.write_text(json.dumps(result, indent=1, default=float) + "\n")
    report(result, write=not args.no_write)
    return 0


def report(result: dict, write: bool) -> None:
    text = speed_report.markdown(result)
    print(text)
    if write:
        speed_report.write(result, text)


if __name__ == "__main__":
    raise SystemExit(main())
