"""Does torch.compile of the VAE decoder pay on this CPU? Both bundled models' decoders, 8 frames.

    python -m benchmarks.vae_compile_probe

Times, in one process and alternating rounds (best of 8): the eager decoder on default-layout
latents (what plain diffusers does), on channels-last latents (what accelerated renders do,
pipelines/render.py), and compiled as the engine compiles the UNet (`compiled_module`), with its
first call (the compile) timed apart.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.compiling import compiled_module  # noqa: E402
from pipelines.loading import load_model  # noqa: E402

FRAMES = 8
ROUNDS = 8


def main() -> int:
    for name in ("shapes64", "scenes"):
        vae = load_model(name).pipe.vae
        side = 16
        latents = torch.randn(FRAMES, 4, side, side, generator=torch.Generator().manual_seed(0))
        channels_last = latents.to(memory_format=torch.channels_last)
        compiled = compiled_module(vae.decoder, torch.device("cpu"))
        with torch.no_grad():
            began = time.perf_counter()
            compiled(vae.post_quant_conv(latents))
            first_s = time.perf_counter() - began
            ways = {
                "eager": lambda: vae.decoder(vae.post_quant_conv(latents)),
                "eager, channels-last latents": lambda: vae.decoder(vae.post_quant_conv(channels_last)),
                "compiled": lambda: compiled(vae.post_quant_conv(latents)),
            }
            best = {way: float("inf") for way in ways}
            for _ in range(ROUNDS):
                for way, call in ways.items():
                    began = time.perf_counter()
                    call()
                    best[way] = min(best[way], time.perf_counter() - began)
            error = (compiled(vae.post_quant_conv(latents)) - ways["eager"]()).abs().max().item()
        figures = ", ".join(f"{way} {1000 * seconds:.1f} ms" for way, seconds in best.items())
        print(f"{name}, {FRAMES} frames, {torch.get_num_threads()} threads: {figures}; "
              f"compile (first call) {first_s:.1f} s; compiled vs eager max |diff| {error:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
