"""One cell of the thread benchmark, in its own process: a policy, a workload, timed renders.

    python -m benchmarks.threads_worker --policy auto --workload shapes64 --repeats 2

Each cell needs a fresh process: torch's thread pool and OpenMP's wait policy are fixed
when the first parallel region runs. Prints one JSON line: the render times in seconds,
the thread counts the policy chose, and the process's start-up figures (import and load).
"""

from __future__ import annotations

import argparse
import json
import time

STARTED = time.perf_counter()

# (model, prompts, frames, steps): the issue's own CLI example, and the README's default morph.
MORPHS = {
    "shapes64": ("shapes64", ("a red circle", "a blue square"), 4, 10),
    "scenes": ("scenes", ("a sunset over the ocean", "a sunrise over mountains"), 16, 20),
}
SD_BLOCK = "sd15-block"  # the first down block of SD 1.5's UNet at 512 px (64x64 latents), 2 rows: one frame with CFG
WORKLOADS = (*MORPHS, SD_BLOCK)


def apply_policy(policy: str) -> None:
    """`default`: torch's own choice (what the project did before); a number: fixed; `auto`: the governor."""
    from pipelines import threads

    if policy == "default":
        return
    threads.configure(None if policy == "auto" else int(policy))


def morph_render(workload: str):
    """Load the bundled model; return (load seconds, the morph once, a small warm-up render)."""
    from pipelines.engine import Morpher
    from pipelines.loading import load_model
    from pipelines.request import MorphRequest

    spec, prompts, frames, steps = MORPHS[workload]
    started = time.perf_counter()
    morpher = Morpher(load_model(spec, device="cpu"))  # no frame cache: every render denoises
    request = MorphRequest(prompts=prompts, frames=frames, steps=steps)
    small = MorphRequest(prompts=prompts, frames=2, steps=2)
    return time.perf_counter() - started, lambda: morpher.render(request), lambda: morpher.render(small)


def sd_block_render():
    """SD 1.5's first CrossAttnDownBlock2D (random weights, real size), forwarded on 2 rows at 64x64."""
    import torch
    from diffusers import UNet2DConditionModel

    from benchmarks.sd_configs import SD15_UNET
    from pipelines import threads

    started = time.perf_counter()
    unet = UNet2DConditionModel(**SD15_UNET)
    block = unet.down_blocks[0].eval()
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 320, 64, 64, generator=generator)
    temb = torch.randn(2, 1280, generator=generator)
    context = torch.randn(2, 77, 768, generator=generator)

    def render(times: int = 2) -> None:
        threads.rebalance(64 * 64 * 320)  # what the engine does at the start of a render: its work's size
        with torch.inference_mode():
            for _ in range(times):
                block(hidden, temb, encoder_hidden_states=context)
    return time.perf_counter() - started, render, lambda: render(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True, help="default, auto or a thread count")
    parser.add_argument("--workload", required=True, choices=WORKLOADS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=90.0,
                        help="stop repeating once the timed renders took this long (at least one runs)")
    args = parser.parse_args(argv)

    import torch  # counted in the import time

    imported = time.perf_counter() - STARTED
    apply_policy(args.policy)
    load_s, render, warm_up = sd_block_render() if args.workload == SD_BLOCK else morph_render(args.workload)
    warm_up()  # first-call allocations and lazy initialisation are not the steady state
    seconds: list[float] = []
    chosen: list[int] = []
    while len(seconds) < args.repeats and (not seconds or sum(seconds) < args.budget_s):
        started = time.perf_counter()
        render()
        seconds.append(time.perf_counter() - started)
        chosen.append(torch.get_num_threads())
    print(json.dumps({"policy": args.policy, "workload": args.workload, "seconds": seconds, "threads": chosen,
                      "import_s": imported, "load_s": load_s}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
