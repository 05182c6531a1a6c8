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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ("a watercolour painting of a fox in a forest", "a bronze statue of a fox on a plinth")
DEFAULT_MODEL = "stabilityai/sd-turbo"


@dataclass(frozen=True)
class Setting:
    batched: bool
    compiled: bool

    @property
    def label(self) -> str:
        return f"{'batched' if self.batched else 'one call per frame'}, compile {'on' if self.compiled else 'off'}"


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
                        help="frames per call in the batched setting (default: all frames in one call)")
    parser.add_argument("--vae-slicing", action="store_true",
                        help="decode frame by frame (pipe.vae.enable_slicing()): less memory for big batches")
    parser.add_argument("--compile", default="both", choices=("off", "on", "both"))
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode, e.g. default, reduce-overhead, max-autotune")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu_bench.json")
    return parser.parse_args(argv)


def check_device(name: str) -> torch.device:
    """The device to run on, or BenchError when CUDA is asked for and absent."""
    if name == "cuda" and not torch.cuda.is_available():
        raise BenchError("No CUDA GPU is available: this benchmark measures a GPU. Run it on a CUDA machine, "
                         "or smoke-test the code path with --device cpu --random-weights --frames 2 --size 64.")
    return torch.device(name)


def load(args: argparse.Namespace, device: torch.device):
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


def settings(compile_choice: str) -> list[Setting]:
    compiled = {"off": [False], "on": [True], "both": [False, True]}[compile_choice]
    return [Setting(batched, flag) for flag in compiled for batched in (True, False)]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_bytes(device: torch.device) -> int | None:
    """Peak memory since the last reset: allocated tensors on CUDA; none measured on CPU."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def timed_morph(morpher, request, device: torch.device) -> tuple[float, int | None]:
    """(seconds, peak bytes) of one morph's frames, pulled as PIL images as a user gets them.

    `Morpher.frames`, not `render`: the manifest's path record (text-encoding every landmark
    prompt once per morph) is not frame work and would blur frames per second.
    """
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    began = time.perf_counter()
    for _ in morpher.frames(request):
        pass
    synchronize(device)
    return time.perf_counter() - began, peak_bytes(device)


def measure(model, setting: Setting, args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then time one morph with this setting."""
    from pipelines.engine import Morpher
    from pipelines.request import MorphRequest

    if setting.compiled and not getattr(model.pipe.unet, "_compiled_call_impl", None):
        model.pipe.unet.compile(mode=args.compile_mode)  # in place: the pipeline keeps its UNet object
    morpher = Morpher(model)  # no frame cache: every frame is denoised
    request = MorphRequest(prompts=PROMPTS, seeds=(1, 2), frames=args.frames, steps=args.steps,
                           guidance=args.guidance, size=(args.size, args.size),
                           batch_size=(args.batch_size or args.frames) if setting.batched else 1)
    warm_s, _ = timed_morph(morpher, request, model.device)
    seconds, peak = timed_morph(morpher, request, model.device)
    return {"setting": setting.label, "batched": setting.batched, "compiled": setting.compiled,
            "warmup_s": round(warm_s, 3), "seconds": round(seconds, 3),
            "frames_per_s": round(args.frames / seconds, 3),
            "peak_gib": None if peak is None else round(peak / 2**30, 3)}


def machine(device: torch.device) -> dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device.type,
            "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                    cuda=torch.version.cuda)
    else:
        info.update(gpu=None, cpu=platform.processor() or platform.machine())
    return info


def markdown(result: dict[str, Any]) -> str:
    """The table of one run, with the settings it was run with."""
    m, a = result["machine"], result["args"]
    where = (f"{m['gpu']} ({m['gpu_memory_gib']} GiB, CUDA {m['cuda']})" if m["gpu"]
             else f"CPU, {m['torch_threads']} threads")
    lines = [f"`{result['command']}` ({m['date']}; {where}; torch {m['torch']}). Model `{result['model']}`, "
             f"{result['dtype']}, {a['frames']} frames of {a['size']}x{a['size']}, {a['steps']} step(s), "
             f"guidance {a['guidance']}, VAE slicing {'on' if a['vae_slicing'] else 'off'}.", "",
             "| setting | frames/s | morph (s) | warm-up incl. compile (s) | peak memory (GiB) |",
             "| --- | --- | --- | --- | --- |"]
    for row in result["rows"]:
        peak = "n/a (CPU)" if row["peak_gib"] is None else f"{row['peak_gib']:.2f}"
        lines.append(f"| {row['setting']} | {row['frames_per_s']:.2f} | {row['seconds']:.2f} | "
                     f"{row['warmup_s']:.1f} | {peak} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = check_device(args.device)
    if args.size % 8:
        raise BenchError(f"--size {args.size} is not a multiple of 8.")
    model = load(args, device)
    if args.vae_slicing:
        model.pipe.vae.enable_slicing()
    rows = []
    for setting in settings(args.compile):  # compile off first: compiling is not undone
        rows.append(measure(model, setting, args))
        print(f"{setting.label}: {rows[-1]['frames_per_s']:.2f} frames/s", flush=True)
    return {"command": "python -m benchmarks.gpu_bench " + " ".join(sys.argv[1:]), "model": model.name,
            "dtype": str(model.dtype).replace("torch.", ""), "args": {key: str(value) if isinstance(value, Path)
                                                                     else value for key, value in vars(args).items()},
            "machine": machine(device), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except BenchError as error:
        print(f"gpu_bench: {error}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
