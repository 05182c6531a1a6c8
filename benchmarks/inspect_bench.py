"""What the path inspector costs next to the render it describes: `python -m benchmarks.inspect_bench`.

Renders a few morphs with the bundled model, then times, in the same process and on the
same frames, (a) the render, (b) the `path` record (norms, angles, gaps, nearest prompts,
PCA; no denoising) and (c) drawing the plot. Prints the ratios; they, not absolute times,
carry across machines.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pipelines.engine import Morpher
from pipelines.inspect import path_record
from pipelines.loading import load_model
from pipelines.plot import draw_path
from pipelines.request import MorphRequest

PAIRS = [("a red circle", "a blue square"), ("a small yellow star", "a large purple triangle"),
         ("a large green square", "a small orange circle")]


def measure(morpher: Morpher, request: MorphRequest, scratch: str) -> dict:
    started = time.perf_counter()
    result = morpher.render(request)
    render_s = time.perf_counter() - started
    request = morpher.resolve(request)
    job = morpher.start_job(request, morpher_walk(request))
    started = time.perf_counter()
    path_record(request, result.frames, job.encoded, job.keys, morpher.model.pipe, morpher.model.name)
    path_s = time.perf_counter() - started
    started = time.perf_counter()
    draw_path(result.manifest, [frame.image for frame in result.frames], scratch)
    plot_s = time.perf_counter() - started
    return {"render_s": round(render_s, 3), "path_s": round(path_s, 3), "plot_s": round(plot_s, 3),
            "path_vs_render": round(path_s / render_s, 4), "plot_vs_render": round(plot_s / render_s, 4)}


def morpher_walk(request: MorphRequest):
    from pipelines.walks import get_walk

    return get_walk(request.walk)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inspect_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    morpher = Morpher(load_model(args.model, device="cpu"))  # no frame cache: every render denoises
    rows = [measure(morpher, MorphRequest(prompts=pair, seeds=(1, 2), frames=args.frames), "/tmp/inspect-bench.png")
            for pair in PAIRS]
    summary = {key: round(sum(row[key] for row in rows) / len(rows), 4) for key in rows[0]}
    print(json.dumps({"frames": args.frames, "morphs": rows, "mean": summary}, indent=2))


if __name__ == "__main__":
    main()
