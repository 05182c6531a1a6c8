"""Render time on a shared CPU: quiet, with one busy core, with two, for each thread policy.

    python -m benchmarks.threads_bench                     # prints JSON, writes the BENCHMARKS.md section
    python -m benchmarks.threads_bench --before REV        # also time the README's CLI example at git REV

Run it on an otherwise idle machine: the benchmark makes its own load. A busy core is a
plain Python busy loop in another process (what any CPU-bound neighbour does to us).
Each cell is a fresh process (`benchmarks/threads_worker.py`): a policy (torch's default,
1 or 2 fixed threads, the `auto` governor of `pipelines/threads.py`), a workload (the
bundled shapes64 model on the issue's 4-frame, 10-step example; the scenes model on the
README's 16-frame, 20-step morph; one real-size SD 1.5 UNet block), the median of up to
3 timed renders after a warm-up. Then the README's CLI example end to end (process start
to files written) with this checkout and, with `--before`, with an older one, so start-up
is compared too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from benchmarks.sections import before_heading, replace_section
from benchmarks.threads_worker import WORKLOADS

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- threads-bench:start (written by python -m benchmarks.threads_bench) -->"
END = "<!-- threads-bench:end -->"
POLICIES = ("default", "1", "auto")  # torch's default is 2 threads on this machine: a fixed 2 is "default"
LOADS = (0, 1, 2)  # busy cores besides the render
CLI_EXAMPLE = ["a sunset over the ocean", "a sunrise over mountains"]
CELL_TIMEOUT_S = 900


@contextmanager
def busy_cores(count: int):
    """`count` processes spinning in Python for the duration."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(1.0 if count else 0.0)  # let the scheduler see them
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a measured process: no thread settings inherited from this shell."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "LATENT_MORPH_THREADS")}
    return {**env, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **extra}


def run_cell(policy: str, workload: str, budget_s: float, repeats: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.threads_worker", "--policy", policy, "--workload", workload,
               "--budget-s", str(budget_s), "--repeats", str(repeats)]
    done = subprocess.run(command, cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=CELL_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"{policy}/{workload} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_cli(checkout: Path, out_dir: Path) -> float:
    """The README's example, `python -m pipelines A B --out m.gif`, process start to exit, in seconds.

    Each run gets an empty frame cache (`LATENT_MORPH_CACHE`), so every run renders every frame.
    """
    cache = tempfile.mkdtemp(prefix="threads-bench-cache-", dir=out_dir)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipelines", *CLI_EXAMPLE, "--out", str(out_dir / "m.gif")],
                          cwd=checkout, env=clean_env(PYTHONPATH=str(checkout), LATENT_MORPH_CACHE=cache),
                          capture_output=True, text=True, timeout=CELL_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"the CLI at {checkout} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started


@contextmanager
def checkout_at(revision: str | None):
    """A temporary worktree of `revision` (None: nothing)."""
    if revision is None:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="threads-bench-before-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), revision], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, capture_output=True)


def measure(workloads: tuple[str, ...], budget_s: float, before: str | None, repeats: int = 3,
            cli_runs: bool = True) -> dict:
    cells, cli = [], []
    with checkout_at(before) as old, tempfile.TemporaryDirectory() as out:
        for load in LOADS:
            with busy_cores(load):
                for workload in workloads:
                    for policy in POLICIES:
                        cell = {**run_cell(policy, workload, budget_s, repeats), "busy_cores": load}
                        cells.append(cell)
                        print(f"  {load} busy, {workload}, {policy}: "
                              f"{statistics.median(cell['seconds']):.2f} s", file=sys.stderr)
                for name, checkout in (("after", ROOT), ("before", old)):
                    if checkout is not None and cli_runs:
                        seconds = time_cli(checkout, Path(out))
                        cli.append({"checkout": name, "busy_cores": load, "seconds": seconds})
                        print(f"  {load} busy, CLI {name}: {seconds:.1f} s", file=sys.stderr)
    return {"cells": cells, "cli": cli, "before": before, "machine": machine(), "runs": [time_stamp(workloads)]}


def time_stamp(workloads: tuple[str, ...]) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {', '.join(workloads)}"


def merged(old: dict, new: dict) -> dict:
    """`new`'s cells over `old`'s for the workloads it measured; the CLI runs of whichever has them."""
    measured = {cell["workload"] for cell in new["cells"]}
    cells = [cell for cell in old["cells"] if cell["workload"] not in measured] + new["cells"]
    return {**new, "cells": cells, "cli": new["cli"] or old["cli"], "before": new["before"] or old["before"],
            "runs": old.get("runs", []) + new["runs"]}


def machine() -> dict:
    from benchmarks.morph_bench import machine as describe

    return describe()


def section(figures: dict) -> str:
    from benchmarks.threads_report import markdown

    return markdown(figures, START, END)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.threads_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--budget-s", type=float, default=60.0, help="timed seconds per cell, about")
    parser.add_argument("--before", default=None, metavar="REV", help="also time the CLI example at this git revision")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "threads_bench.json")
    parser.add_argument("--repeats", type=int, default=3, help="timed renders per cell, within --budget-s")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI runs")
    parser.add_argument("--merge", action="store_true",
                        help="keep the cells of other workloads (and the CLI runs) from the --json file")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument("--report-only", action="store_true", help="write the section from the --json file")
    args = parser.parse_args(argv)
    if args.report_only:
        replace_section(ROOT / "BENCHMARKS.md", section(json.loads(args.json.read_text())), START, END)
        return 0
    figures = measure(tuple(args.workloads), args.budget_s, args.before, args.repeats, not args.no_cli)
    if args.merge and args.json.exists():
        figures = merged(json.loads(args.json.read_text()), figures)
    args.json.write_text(json.dumps(figures, indent=1) + "\n")
    if not args.no_write:
        replace_section(ROOT / "BENCHMARKS.md", section(figures), START, END,
                        before_heading("## The scenes model (landscapes, 128 px)"))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
