"""The Ray backend on this machine: throughput with 1 vs 2 replicas, and the Ray path's latency overhead.

    OMP_NUM_THREADS=1 python -m benchmarks.ray_bench            # prints JSON, writes the BENCHMARKS.md section

Everything goes through `service.runner.Runner`, as the page's requests do: the local
backend (the model in this process) and the Ray backend (the model on Ray Serve
replicas, one CPU thread each), measured side by side in one run with the bundled
model. Every morph has its own seed and the frame caches are memory-only, so every
frame is denoised (no morph reuses another's frames).

1. latency of one morph, local vs Ray with 1 replica (alternating, median of a few);
2. throughput: `--clients` morphs submitted at once, local (one at a time, one model),
   Ray with 1 replica and Ray with 2 replicas, in morphs per minute;
3. one long morph (16 frames) on 1 replica vs sharded over 2 replicas.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.sections import replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- ray-bench:start (written by python -m benchmarks.ray_bench) -->"
END = "<!-- ray-bench:end -->"
LIMITS_KW = {"deadline_s": 1800.0, "queue_size": 16}


def values(seed: int, frames: int, steps: int) -> dict:
    return {"prompt_a": "a red circle", "prompt_b": "a blue square", "seeds": str(seed), "frames": frames,
            "steps": steps}


def one_morph(runner, seed: int, frames: int, steps: int) -> float:
    """Seconds from the request to its files, through the Runner."""
    started = time.perf_counter()
    for update in runner.updates("chain", values(seed, frames, steps)):
        if update.kind == "done":
            break
    return time.perf_counter() - started


def throughput(runner, seeds: list[int], frames: int, steps: int) -> float:
    """Morphs per minute with one client thread per seed, all submitted at once."""
    threads = [threading.Thread(target=one_morph, args=(runner, seed, frames, steps)) for seed in seeds]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(seeds) / (time.perf_counter() - started) * 60


def deploy_replicas(replicas: int, shard_frames: int, limits):
    from service.backends import BackendOptions
    from service.backends.ray_serve import deploy

    options = BackendOptions(backend="ray", replicas=replicas, shard_frames=shard_frames)
    # the same application name: serve.run updates it to the new number of replicas
    return deploy(None, 0, options, queue_size=limits.queue_size, deadline_s=limits.deadline_s, device="cpu")


def measure(args: argparse.Namespace) -> dict:
    import torch

    from pipelines.cache import FrameCache
    from pipelines.engine import Morpher
    from pipelines.loading import default_model_spec, load_model
    from service.backends import BackendOptions
    from service.backends.ray_serve import connect, shutdown
    from service.limits import Limits
    from service.runner import Runner

    torch.set_num_threads(1)  # as each replica: one thread per model
    limits = Limits(**LIMITS_KW)
    seeds = iter(range(1000, 100000))
    load_before = os.getloadavg()
    local = Runner({"local": Morpher(load_model(default_model_spec(), device="cpu"), cache=FrameCache())}, limits)
    connect(BackendOptions(backend="ray"), num_cpus=2)
    try:
        one = deploy_replicas(1, 0, limits)
        ray_one = Runner({"ray": one}, limits)
        one_morph(local, next(seeds), args.frames, args.steps)  # warm-up: first calls pay for lazy set-up
        one_morph(ray_one, next(seeds), args.frames, args.steps)
        local_s, ray_s = [], []
        for _ in range(args.repeats):
            local_s.append(one_morph(local, next(seeds), args.frames, args.steps))
            ray_s.append(one_morph(ray_one, next(seeds), args.frames, args.steps))
        clients = [next(seeds) for _ in range(args.clients)]
        figures = {
            "latency_local_s": statistics.median(local_s), "latency_ray_s": statistics.median(ray_s),
            "latency_runs": args.repeats,
            "mpm_local": throughput(local, [next(seeds) for _ in clients], args.frames, args.steps),
            "mpm_ray_1": throughput(ray_one, [next(seeds) for _ in clients], args.frames, args.steps),
            "long_1_s": one_morph(ray_one, next(seeds), args.long_frames, args.steps),
        }
        two = deploy_replicas(2, args.long_frames // 2, limits)
        ray_two = Runner({"ray": two}, limits)
        one_morph(ray_two, next(seeds), args.frames, args.steps)  # warm-up of the new replica
        figures["mpm_ray_2"] = throughput(ray_two, [next(seeds) for _ in clients], args.frames, args.steps)
        figures["long_2_sharded_s"] = one_morph(ray_two, next(seeds), args.long_frames, args.steps)
    finally:
        shutdown()
    figures.update(load_before=[round(value, 2) for value in load_before],
                   load_after=[round(value, 2) for value in os.getloadavg()], cores=os.cpu_count(),
                   frames=args.frames, steps=args.steps, clients=args.clients, long_frames=args.long_frames)
    return figures


def section(figures: dict) -> str:
    f = {key: round(value, 2) if isinstance(value, float) else value for key, value in figures.items()}
    overhead = figures["latency_ray_s"] - figures["latency_local_s"]
    return "\n".join([
        START,
        "## Ray Serve backend: replicas, throughput and overhead",
        "",
        f"`python -m benchmarks.ray_bench`: the bundled model, {f['frames']}-frame morphs of {f['steps']} steps at "
        "64x64, every frame denoised (own seed, memory-only frame caches), all through `service.runner.Runner` "
        "as the page's requests are. Local = the model in the front-end process; Ray = the model on Ray Serve "
        f"replicas (one CPU thread each). {f['cores']} cores, no GPU.",
        "",
        "| what | local | Ray, 1 replica | Ray, 2 replicas |",
        "| --- | --- | --- | --- |",
        f"| one morph, median of {f['latency_runs']} (s) | {f['latency_local_s']} | {f['latency_ray_s']} | |",
        f"| throughput, {f['clients']} clients at once (morphs/min) | {f['mpm_local']} | {f['mpm_ray_1']} | "
        f"{f['mpm_ray_2']} |",
        f"| one {f['long_frames']}-frame morph (s) | | {f['long_1_s']} | {f['long_2_sharded_s']} (2 shards) |",
        "",
        f"The Ray path adds {overhead:.2f} s to one morph ({overhead / figures['latency_local_s']:.0%}): "
        "handing the request to a replica, streaming each step and pickled frame back, and a second process "
        "(the replica) competing for the same cores; with a few runs on a loaded machine, read it as a rough size. "
        f"2 replicas give {figures['mpm_ray_2'] / figures['mpm_ray_1']:.2f}x the throughput of 1.",
        "",
        f"Sharding the {f['long_frames']}-frame morph over 2 replicas took {f['long_2_sharded_s']} s against "
        f"{f['long_1_s']} s on one: "
        + ("faster, as it should be with a free core per replica." if f["long_2_sharded_s"] < f["long_1_s"] else
           "no gain here: with no free core, two replicas share the same CPU time, and the assembly pass and "
           "the shards' start-up come on top."),
        "",
        "What 2 cores allow: each replica is one process with one model and one thread, so 2 replicas are the "
        "most this machine can run side by side, and the front end (Gradio, Ray's own processes) shares the same "
        f"cores. The machine was shared while this ran (a training job on one core, plus other benchmarks): load "
        f"average {f['load_before'][0]} before and {f['load_after'][0]} after, on {f['cores']} cores. So the "
        "replicas competed with other work for CPU time; the 2-replica figures are a floor, not what a machine "
        "with a free core (or a GPU) per replica gets. Compare ratios, not seconds, across machines.",
        END,
    ])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ray_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-frames", type=int, default=16)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--from-json", type=Path, help="rewrite the section from figures printed by an earlier run")
    args = parser.parse_args()
    figures = json.loads(args.from_json.read_text()) if args.from_json else measure(args)
    print(json.dumps(figures, indent=2))
    if not args.no_write:
        replace_section(ROOT / "BENCHMARKS.md", section(figures), START, END)


if __name__ == "__main__":
    main()
