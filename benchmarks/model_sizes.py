"""Real Stable Diffusion model sizes on this CPU: time and peak memory per configuration.

    OMP_NUM_THREADS=1 python -m benchmarks.model_sizes            # every configuration, writes BENCHMARKS.md
    OMP_NUM_THREADS=1 python -m benchmarks.model_sizes --only sd15-batch sd-turbo --no-write
    python -m benchmarks.model_sizes --report-only                  # redraw the section from the json

Each configuration runs in its own process (one at a time, one torch thread) so its
peak resident memory is its own: SD 1.5, SD 2.1, SD-Turbo and SDXL are built from
their published configs with random weights (`benchmarks.sd_configs`), prompt
embeddings come from random token ids through the real-size text encoders (no
tokenizer), and the stock diffusers pipeline denoises a 2-frame batch with
`prompt_embeds=` / `latents=` for ONE step. Per-frame times for the usual step
counts are extrapolated from that step (UNet time per call x steps, plus the VAE
decode); the report says so. Raw figures: `benchmarks/model_sizes.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.sections import replace_section

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "model_sizes.json"

# name -> what one child process measures. frames: frames in the batch; per_frame: one pipeline
# call per frame instead; decode: "batch" (the pipeline decodes every frame), "one" (one frame,
# which is what VAE slicing does per frame), "none"; size: pixels (None = the model's native size).
CONFIGS: dict[str, dict[str, Any]] = {
    "sd15-batch": {"model": "sd15", "frames": 2, "decode": "one"},
    "sd15-per-frame": {"model": "sd15", "frames": 1, "decode": "none"},
    "sd-turbo": {"model": "sd-turbo", "frames": 2, "decode": "none"},
    # fp16 / bf16 are many times slower on a CPU without native half kernels: measured at 128 px, as ratios
    "sd15-dtypes-128px": {"model": "sd15", "frames": 1, "decode": "none", "size": 128,
                          "dtypes": ["float32", "float16", "bfloat16"]},
    "sd15-attention-slicing": {"model": "sd15", "frames": 2, "decode": "none", "attention_slicing": True},
    # the two largest: one frame (2 UNet rows with guidance) to fit the time box of a shared 2-core machine
    "sd21": {"model": "sd21", "frames": 2, "decode": "none"},
    "sdxl": {"model": "sdxl", "frames": 1, "decode": "none"},
    "sd15-vae-batch": {"model": "sd15", "frames": 2, "decode": "batch", "unet": False},
    "sd15-vae-tiling": {"model": "sd15", "frames": 1, "decode": "one", "vae_tile": 256, "unet": False},
    "sdxl-vae": {"model": "sdxl", "frames": 1, "decode": "one", "unet": False},
}


def rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Phases:
    """Samples resident memory in a thread and keeps the peak of each named phase."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.phase = "idle"  # between named phases
        self.peaks: dict[str, int] = {}
        self.seconds: dict[str, float] = {}  # CPU seconds of the calling thread
        self.wall: dict[str, float] = {}
        self._every = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.note()
            self._stop.wait(self._every)

    def note(self) -> None:
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss_bytes())

    def run(self, phase: str, function, *args, **kwargs):
        """Call `function` as `phase`: its wall time, CPU time and peak memory are recorded under that name.

        CPU time of this thread (torch runs on it with one thread) is what the work costs on a
        free core; wall time grows when other jobs share the cores.
        """
        previous, self.phase = self.phase, phase
        began, began_cpu = time.perf_counter(), time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.thread_time() - began_cpu
            self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - began
            self.note()
            self.phase = previous

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def count_unet_calls(unet) -> list[int]:
    """A one-item list counting UNet forward calls (a hook: the pipeline's loop is not touched)."""
    calls = [0]
    unet.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def encode(pipe, spec, frames: int) -> dict:
    """Prompt embeddings for `frames` frames from random token ids (no tokenizer), as encode_prompt shapes them."""
    import torch

    generator = torch.Generator("cpu").manual_seed(0)
    ids = [torch.randint(0, 49407, (1, 77), generator=generator) for _ in range(2)]  # prompt, negative
    with torch.no_grad():
        if spec.pipeline == "StableDiffusionXLPipeline":
            embeds, pooled = [], []
            for row in ids:
                first = pipe.text_encoder(row, output_hidden_states=True)
                second = pipe.text_encoder_2(row, output_hidden_states=True)
                embeds.append(torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1))
                pooled.append(second.text_embeds)
            inputs = {"pooled_prompt_embeds": pooled[0].repeat(frames, 1),
                      "negative_pooled_prompt_embeds": pooled[1].repeat(frames, 1)}
        else:
            embeds, inputs = [pipe.text_encoder(row)[0] for row in ids], {}
    inputs["prompt_embeds"] = embeds[0].repeat(frames, 1, 1)
    if spec.uses_cfg:
        inputs["negative_prompt_embeds"] = embeds[1].repeat(frames, 1, 1)
    return inputs


def measure(config: dict) -> dict:
    """One configuration, in this process: build, encode, one denoising step, decode; times and peaks."""
    import torch

    from benchmarks.sd_configs import MODELS, build_pipeline

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # tiny random activations must not hit the slow denormal path
    torch.manual_seed(0)
    spec = MODELS[config["model"]]
    size = config.get("size") or spec.size
    phases = Phases()
    pipe = phases.run("build", build_pipeline, spec)
    weights = {}
    if config.get("attention_slicing"):
        pipe.enable_attention_slicing()
    if config.get("vae_slicing"):
        pipe.vae.enable_slicing()
    if config.get("vae_tile"):  # at native size the default tile is the whole picture: smaller tiles to see the effect
        pipe.vae.enable_tiling()
        pipe.vae.tile_sample_min_size, pipe.vae.tile_latent_min_size = config["vae_tile"], config["vae_tile"] // 8
    frames = config["frames"]
    embeds = phases.run("encode", encode, pipe, spec, frames)
    calls = count_unet_calls(pipe.unet)
    decoded = {"batch": frames, "one": 1, "none": 0}[config["decode"]]
    dtypes = config.get("dtypes", ["float32"])
    for name in dtypes:
        dtype = getattr(torch, name)
        suffix = "" if len(dtypes) == 1 else f"_{name}"
        if dtype != torch.float32:
            pipe.to(dtype)
        weights[name] = round(rss_bytes() / 2**30, 3)
        inputs = {key: value.to(dtype) for key, value in embeds.items()}
        latents = torch.randn((frames, 4, size // 8, size // 8), generator=torch.Generator("cpu").manual_seed(1))
        latents = latents.to(dtype)
        with torch.no_grad():
            if config.get("unet", True):
                latents = phases.run("unet" + suffix, pipe, **inputs, latents=latents, num_inference_steps=1,
                                     guidance_scale=spec.guidance, width=size, height=size,
                                     output_type="latent").images
            if decoded:
                phases.run("vae" + suffix, pipe.vae.decode, latents[:decoded] / pipe.vae.config.scaling_factor)
    phases.stop()
    import resource

    return {
        "config": config, "size": size, "rows": frames * (2 if spec.uses_cfg else 1), "unet_calls": calls[0],
        "frames_decoded": decoded, "seconds": {key: round(value, 2) for key, value in phases.seconds.items()},
        "wall_seconds": {key: round(value, 2) for key, value in phases.wall.items()},
        "weights_rss_gib": weights[dtypes[0]] if len(dtypes) == 1 else weights,
        "peak_rss_gib": {key: round(value / 2**30, 3) for key, value in phases.peaks.items()},
        "ru_maxrss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
    }


def available_gib() -> float:
    """MemAvailable from /proc/meminfo, in GiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def needed_gib(config: dict) -> float:
    """fp32 weights plus a margin for activations: a configuration that cannot fit is not started."""
    from benchmarks.sd_configs import MODELS, count_parameters

    return sum(count_parameters(MODELS[config["model"]]).values()) * 4 / 2**30 + 2.5


def run_child(name: str, timeout_s: float) -> dict:
    """Measure one configuration in a fresh process with one torch thread; an error is recorded, not raised."""
    need, free = needed_gib(CONFIGS[name]), available_gib()
    if need > free:  # other jobs share this machine: never push them into the OOM killer
        return {"config": CONFIGS[name], "error": f"needs about {need:.0f} GiB, {free:.1f} GiB available: not run"}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "benchmarks.model_sizes", "--child", json.dumps(CONFIGS[name])]
    began = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"config": CONFIGS[name], "error": f"did not finish within {timeout_s:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"config": CONFIGS[name], "error": f"exit {done.returncode}: {tail}"}
    result = json.loads(lines[-1])
    result["wall_s"] = round(time.perf_counter() - began, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_sizes", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="measure these configurations only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per configuration")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    parser.add_argument("--report-only", action="store_true", help="rewrite the section from the json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))), flush=True)
        return
    from benchmarks import model_sizes_report as report

    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    if not args.report_only:
        for name in args.only or list(CONFIGS):
            print(f"measuring {name} ...", flush=True)
            stored["runs"][name] = run_child(name, args.timeout)
            print(json.dumps(stored["runs"][name]), flush=True)
            stored["machine"] = report.machine()
            RESULTS.write_text(json.dumps(stored, indent=1) + "\n")  # after each: a long run keeps what it got
    section = report.markdown(stored)
    print(section)
    if not args.no_write:
        replace_section(ROOT / "BENCHMARKS.md", section, report.START, report.END)


if __name__ == "__main__":
    main()
