"""Run by tests/test_pipelines_speed.py in a new process: a morph of the tiny model with the compiled UNet.

    python tests/compile_probe.py MODEL_FOLDER

Prints one JSON line: inductor's on-disk cache hits and misses in this process, the
PSNR of the compiled keyframes against plain `pipe(prompt=...)` renders, the worst
PSNR of the compiled frames against the eager engine's, and how many graphs were
compiled again by renders in the other modes (deep-feature cache, attention
interpolation) and a plain render after them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pipelines import metrics  # noqa: E402
from pipelines.engine import Morpher  # noqa: E402
from pipelines.loading import load_model  # noqa: E402
from pipelines.request import MorphRequest  # noqa: E402
from pipelines.speed import SpeedSettings  # noqa: E402

REQUEST = MorphRequest(prompts=("a red circle", "a blue square"), seeds=(1, 2), frames=4, steps=3, size=(64, 64))


def main() -> None:
    torch.set_num_threads(1)
    model = load_model(sys.argv[1], device="cpu")
    compiled = Morpher(model, speed=SpeedSettings(compile="on"))
    compiled.accelerator.prepare()
    frames = [frame.image for frame in compiled.frames(REQUEST)]
    eager = [frame.image for frame in Morpher(model, speed=SpeedSettings(compile="off")).frames(REQUEST)]
    plain = [model.pipe(prompt=prompt, generator=torch.Generator("cpu").manual_seed(seed), num_inference_steps=3,
                        guidance_scale=REQUEST.guidance, width=64, height=64).images[0]
             for prompt, seed in zip(REQUEST.prompts, REQUEST.seeds)]
    counters = torch._dynamo.utils.counters["inductor"]
    graphs = counters["fxgraph_cache_hit"] + counters["fxgraph_cache_miss"]
    # the other modes install processors and hooks; the plain render after them must not recompile
    for changed in (replace(REQUEST, speed="deepcache-2"), replace(REQUEST, attention="interpolate"), REQUEST):
        list(compiled.frames(changed))
    print(json.dumps({
        "graphs_compiled_after_other_modes": counters["fxgraph_cache_hit"] + counters["fxgraph_cache_miss"] - graphs,
        "fxgraph_cache_hit": counters["fxgraph_cache_hit"],
        "fxgraph_cache_miss": counters["fxgraph_cache_miss"],
        "keyframes_db": [min(metrics.psnr(frames[0], plain[0]), 999.0), min(metrics.psnr(frames[-1], plain[1]), 999.0)],
        "worst_vs_eager_db": min(min(metrics.psnr(a, b), 999.0) for a, b in zip(frames, eager)),
        "unet_swapped_back": model.pipe.unet is compiled.accelerator.compiled._orig_mod,
    }))


if __name__ == "__main__":
    main()
