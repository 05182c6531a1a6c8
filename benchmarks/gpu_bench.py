"""Speed at equal work on a CUDA GPU: a 16-frame SD-Turbo 512 px morph, engine against the stock pipeline.

    python -m benchmarks.gpu_bench                          # stabilityai/sd-turbo, fp16, every method
    python -m benchmarks.gpu_bench --compile off            # leave the torch.compile methods out
    python -m benchmarks.gpu_bench --steps 4                # the approximate modes need steps to save
    python -m benchmarks.gpu_bench --random-weights         # SD-Turbo's architecture, random weights, no hub
    python -m benchmarks.gpu_bench --model runwayml/stable-diffusion-v1-5 --steps 25 --guidance 7.5 --batch-size 8
    OMP_NUM_THREADS=1 python -m benchmarks.gpu_bench --device cpu --random-weights --frames 4 --size 64 --steps 2 --compile off

The GPU counterpart of `benchmarks/speed_bench.py` (CPU): every method of
`benchmarks/speed_methods.py` renders the same frames of a 2-prompt chain at linear
spacing, in one run: the stock diffusers pipeline one call per frame and batched 4
frames a call (what the peers do), the engine eager at the peers' batch of 4 and at
its own batch, compiled (`torch.compile` as `pipelines.speed` compiles it: max-autotune
on CUDA), and its approximate modes (deepcache-2, deepcache-3, half the steps).
`--batch-size N` adds the engine, eager and compiled, at N frames a call.

Each method gets one untimed warm-up morph (it includes any compilation; its time is
reported apart), then one timed morph with CUDA synchronized before and after; peak
memory is `torch.cuda.max_memory_allocated` over the timed morph (reset before it).
Reported per method: seconds, frames per second, speed-up against the stock pipeline
batched 4, peak memory, PSNR of its frames against the engine's eager frames (mean and
worst), its keyframes' PSNR against plain `pipe(prompt=...)` renders, and the jump
ratio J of its frame gaps. The stock methods run first, before the engine turns the
UNet channels_last on CUDA: they measure the pipeline as the peers load it. At
SD-Turbo's single step, half the steps and the deep-feature cache do the full work.

The model is loaded by `pipelines.loading` (fp16 on CUDA). Writes
`benchmarks/gpu_bench.json` (or `--out`) and a Markdown table beside it (`.md`).

Exits with status 2 and one sentence when there is no CUDA GPU (unless `--device cpu`,
a smoke test of the code path) or the model cannot be loaded (offline and not cached:
pass `--random-weights` or a local folder).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # imported where used: a missing GPU or model is reported before the pipelines load
    from benchmarks.speed_methods import Method
    from pipelines.loading import LoadedModel
    from pipelines.request import MorphRequest

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ("a watercolour painting of a fox in a forest", "a bronze statue of a fox on a plinth")
SEEDS = (1, 2)
DEFAULT_MODEL = "stabilityai/sd-turbo"


class BenchError(Exception):
    """A reason the benchmark cannot run here; the message is one sentence for the user."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id, local diffusers folder or .safetensors")
    parser.add_argument("--random-weights", action="store_true",
                        help="build SD-Turbo's architecture from its published config with random weights (no hub)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cuda (the benchmark) or cpu (a smoke test of the code path)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=512, help="width = height in pixels, a multiple of 8")
    parser.add_argument("--steps", type=int, default=1, help="SD-Turbo is made for 1-4 steps")
    parser.add_argument("--guidance", type=float, default=0.0, help="SD-Turbo runs without guidance")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="also measure the engine at this many frames a call (it otherwise uses the peers' 4 "
                             "and its own default for the device and size)")
    parser.add_argument("--vae-slicing", action="store_true",
                        help="decode frame by frame (pipe.vae.enable_slicing()): less memory for big batches")
    # "both" is what "on" was called when compiled and eager runs were separate settings: the eager
    # methods are always measured now (they are the reference), so the two mean the same
    parser.add_argument("--compile", default="on", choices=("on", "off", "both"),
                        help="on: include the torch.compile methods; off: leave them out")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu_bench.json")
    args = parser.parse_args(argv)
    if args.frames < 2 or args.steps < 1 or (args.batch_size is not None and args.batch_size < 1):
        parser.error("--frames must be at least 2, --steps and --batch-size at least 1")
    return args


def check_device(name: str) -> torch.device:
    """The device to run on, or BenchError when CUDA is asked for and absent."""
    if name == "cuda" and not torch.cuda.is_available():
        raise BenchError("No CUDA GPU is available: this benchmark measures a GPU. Run it on a CUDA machine, "
                         "or smoke-test the code path with --device cpu --random-weights --frames 4 --size 64.")
    return torch.device(name)


def load(args: argparse.Namespace, device: torch.device) -> LoadedModel:
    """A LoadedModel: the hub model through pipelines.loading, or SD-Turbo's architecture with random weights."""
    from pipelines.loading import LoadedModel, ModelLoadError, dtype_for, load_model

    if not args.random_weights:
        try:
            return load_model(args.model, device=device.type)
        except ModelLoadError as error:
            raise BenchError(f"{error} (or run with --random-weights to measure the architecture alone)") from error
    from benchmarks.sd_configs import MODELS, build_pipeline
    from pipelines.tokenizer import build_clip_tokenizer

    pipe = build_pipeline(MODELS["sd-turbo"])
    # SD 2.x tokenizers use the same 49,408-token CLIP BPE vocabulary; ids are all random weights see.
    pipe.tokenizer = build_clip_tokenizer(Path(tempfile.mkdtemp(prefix="gpu-bench-tokenizer-")))
    dtype = dtype_for(device)
    pipe.to(device, dtype)
    return LoadedModel(pipe=pipe, name="random:sd-turbo", device=device, dtype=dtype)


def morph_request(args: argparse.Namespace) -> MorphRequest:
    from pipelines.request import MorphRequest

    return MorphRequest(prompts=PROMPTS, seeds=SEEDS, frames=args.frames, steps=args.steps,
                        guidance=args.guidance, size=(args.size, args.size))


def method_list(device: torch.device, args: argparse.Namespace) -> list[Method]:
    """`speed_methods.methods()`, plus the engine at `--batch-size` frames a call when one is asked for."""
    from benchmarks.speed_methods import PEER_BATCH, Method, engine, methods
    from pipelines.render import default_batch_size
    from pipelines.speed import SpeedSettings

    compile_too = args.compile != "off"
    found = methods(device, compile_too=compile_too)
    if args.batch_size in (None, PEER_BATCH, default_batch_size(device, args.size, args.size)):
        return found  # that batch is in the list already
    kinds = ["off", "on"] if compile_too else ["off"]
    extra = [Method(f"engine, {'compiled' if kind == 'on' else 'eager'}, {args.batch_size} a batch", True,
                    engine(SpeedSettings.for_device(device, compile=kind), batch_size=args.batch_size),
                    "frames a call from --batch-size") for kind in kinds]
    # beside the engine's other exact rows, before the approximate modes
    at = next(index for index, method in enumerate(found) if not method.exact)
    return found[:at] + extra + found[at:]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_bytes(device: torch.device) -> int | None:
    """Peak memory since the last reset: allocated tensors on CUDA; none measured on CPU."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def timed_render(method: Method, model: LoadedModel, request: MorphRequest) -> tuple[float, int | None, list]:
    """(seconds, peak bytes, frames) of one morph, its frames pulled as PIL images as a user gets them.

    The methods render frames only: the manifest's path record (text-encoding every landmark
    prompt once per morph) is not frame work and would blur frames per second.
    """
    device = model.device
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the previous method's cached blocks would hide this one's peak
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    began = time.perf_counter()
    images = method.render(model, request)
    synchronize(device)
    return time.perf_counter() - began, peak_bytes(device), images


def measure(method: Method, model: LoadedModel, request: MorphRequest) -> tuple[dict[str, Any], list]:
    """Warm up (compiles the shapes the timed morph meets), then time one morph: its row and its frames."""
    warm_s, _, _ = timed_render(method, model, request)
    seconds, peak, images = timed_render(method, model, request)
    row = {"method": method.name, "exact": method.exact, "note": method.note, "warmup_s": round(warm_s, 3),
           "seconds": round(seconds, 4), "frames_per_s": round(request.frames / seconds, 3),
           "s_per_frame": round(seconds / request.frames, 4),
           "peak_gib": None if peak is None else round(peak / 2**30, 3)}
    return row, images


def machine(device: torch.device) -> dict[str, Any]:
    import diffusers

    info = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "device": device.type, "torch_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                    cuda=torch.version.cuda)
    else:
        info.update(gpu=None, cpu=platform.processor() or platform.machine())
    return info


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.gpu_bench_report import add_quality, plain_keyframes

    device = check_device(args.device)
    if args.size % 8:
        raise BenchError(f"--size {args.size} is not a multiple of 8.")
    model = load(args, device)
    if args.vae_slicing:
        model.pipe.vae.enable_slicing()
    request = morph_request(args)
    rows, images = [], {}
    for method in method_list(device, args):  # stock first: the engine may turn the UNet channels_last
        row, images[method.name] = measure(method, model, request)
        rows.append(row)
        print(f"{method.name}: {row['frames_per_s']:.2f} frames/s (warm-up {row['warmup_s']:.1f} s)", flush=True)
    add_quality(rows, images, plain_keyframes(model.pipe, request))
    return {"command": "python -m benchmarks.gpu_bench " + " ".join(sys.argv[1:]), "model": model.name,
            "dtype": str(model.dtype).replace("torch.", ""),
            "args": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
            "machine": machine(device), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except BenchError as error:
        print(f"gpu_bench: {error}", file=sys.stderr)
        return 2
    from benchmarks.gpu_bench_report import markdown

    args.out.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
