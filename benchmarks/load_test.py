"""Load test of the web service: N concurrent `gradio_client` jobs against one real server.

    python benchmarks/load_test.py                      # 12 clients x 2 waves, tiny model, queue of 4
    python benchmarks/load_test.py --clients 24 --waves 3 --write BENCHMARKS.md
    python benchmarks/load_test.py --walk mixed         # clients take turns on /morph, /grid, /direction
    python benchmarks/load_test.py --clients 1 --waves 1 --frames 2 --steps 2   # a quick check that it runs

Every job must either complete with correct output (a GIF of the asked frame count and a
manifest naming its walk, prompts and seed) or be refused at once with Gradio's "Queue is full" message;
none may be lost or hang. The server's resident memory is sampled throughout and must
not keep growing from wave to wave. Prints the figures; `--write` puts them under the
"Load test" heading of a Markdown file (other sections are left alone).
Not part of the default test run: it loads the CPU for a minute or so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradio_client import Client  # noqa: E402
from PIL import Image  # noqa: E402

from service.testing import ServerProcess  # noqa: E402

MAX_CLIENTS = 64  # bounded: this is a test of the queue, not of the machine
HEADING = "## Load test"
PROMPT_PAIRS = [("a red circle", "a blue square"), ("a small yellow star", "a large purple triangle")]
GRID_PROMPTS = ("a red circle", "a blue circle", "a red square", "a blue square")
DIRECTION_PROMPTS = ("a red circle", "a red square", "a blue square")
WALKS = ("chain", "grid", "direction")
ENDPOINTS = {"chain": "/morph", "grid": "/grid", "direction": "/direction"}


@dataclass
class Outcome:
    wave: int
    client: int
    kind: str  # "completed" | "refused" | "wrong" | "error" | "hung"
    seconds: float
    detail: str = ""


def job_for(walk: str, client_id: int, frames: int, steps: int) -> tuple[tuple[str, ...], dict, int]:
    """(prompts, keyword arguments of the endpoint, frames expected back) for one visitor."""
    if walk == "grid":
        columns = max(2, frames // 2)  # a 2-row grid of about `frames` tiles
        prompts: tuple[str, ...] = GRID_PROMPTS
        options: dict = {"grid": f"2x{columns}"}
        expected = 2 * columns
    else:
        prompts = PROMPT_PAIRS[client_id % len(PROMPT_PAIRS)] if walk == "chain" else DIRECTION_PROMPTS
        options, expected = {"frames": frames}, frames
    slots = dict(zip(("prompt_a", "prompt_b", "prompt_c", "prompt_d"), prompts))
    return prompts, {**slots, "seeds": str(client_id), "steps": steps, **options}, expected


def run_job(url: str, wave: int, client_id: int, frames: int, steps: int, timeout_s: float,
            walk: str = "chain") -> Outcome:
    """One visitor: connect, ask for a morph of `walk`, check what comes back."""
    prompts, arguments, expected = job_for(walk, client_id, frames, steps)
    began = time.monotonic()
    try:
        client = Client(url, verbose=False)
        began = time.monotonic()  # times below run from the request, not from the connection
        job = client.submit(**arguments, api_name=ENDPOINTS[walk])
        *files, gallery = job.result(timeout=timeout_s)
    except TimeoutError:
        return Outcome(wave, client_id, "hung", time.monotonic() - began, f"no answer in {timeout_s:g} s")
    except Exception as error:  # noqa: BLE001 - every failure is a figure
        kind = "refused" if "Queue is full" in str(error) else "error"
        return Outcome(wave, client_id, kind, time.monotonic() - began, str(error)[:200])
    seconds = time.monotonic() - began
    try:
        # chain and direction: gif, strip, mp4, manifest; grid: grid, gif, mp4, manifest
        named = dict(zip(("grid", "gif") if walk == "grid" else ("gif", "strip"), files[:2]))
        mp4, manifest = files[2:]
        with Image.open(named["gif"]) as image:
            gif_frames = image.n_frames
        record = json.loads(Path(manifest).read_text())
        ok = (
            gif_frames == expected
            and len(gallery) == expected
            and record["walk"] == walk
            and record["prompts"] == list(prompts)
            and record["seeds"][0] == client_id
            and Path(mp4).stat().st_size > 0
            and all(Path(path).stat().st_size > 0 for path in named.values())
        )
    except Exception as error:  # noqa: BLE001
        return Outcome(wave, client_id, "wrong", seconds, f"unreadable output: {error}")
    return Outcome(wave, client_id, "completed" if ok else "wrong", seconds, "" if ok else "output mismatch")


class MemorySampler(threading.Thread):
    """Samples the server's resident memory every `every_s` seconds."""

    def __init__(self, server: ServerProcess, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.server, self.every_s = server, every_s
        self.samples: list[float] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append(self.server.rss_mb())
            except OSError:
                return
            self._halt.wait(self.every_s)

    def stop(self) -> float:
        self._halt.set()
        self.join(timeout=5)
        return max(self.samples, default=float("nan"))


def walk_of(choice: str, client_id: int) -> str:
    """The walk a client asks for: the chosen one, or in turn when mixed."""
    return WALKS[client_id % len(WALKS)] if choice == "mixed" else choice


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=12, help=f"concurrent jobs per wave (at most {MAX_CLIENTS})")
    parser.add_argument("--waves", type=int, default=2, help="rounds of concurrent jobs (memory is compared across them)")
    parser.add_argument("--queue-size", type=int, default=4, help="the server's --queue-size")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--model", default="tiny", help="the server's --model (default: the tiny model)")
    parser.add_argument("--walk", default="chain", choices=(*WALKS, "mixed"),
                        help="the endpoint every client calls (/morph for chain); mixed: clients take turns")
    parser.add_argument("--job-timeout", type=float, default=120.0, help="a job with no answer by then counts as hung")
    parser.add_argument("--max-growth-mb", type=float, default=150.0, help="allowed memory growth from wave 1 to the last")
    parser.add_argument("--write", type=Path, help="Markdown file whose 'Load test' section gets the figures")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be between 1 and {MAX_CLIENTS}")
    if not 1 <= args.waves <= 10:
        parser.error("--waves must be between 1 and 10")

    log_path = Path(tempfile.mkdtemp(prefix="latent-morph-load-")) / "server.log"
    server_args = ["--model", args.model, "--device", "cpu", "--queue-size", str(args.queue_size)]
    outcomes: list[Outcome] = []
    rss_after_wave: list[float] = []
    with ServerProcess(server_args, log_path) as server:
        # one job first, so model warm-up is not counted as load
        run_job(server.url, 0, 0, args.frames, args.steps, args.job_timeout, walk_of(args.walk, 0))
        rss_start = server.rss_mb()
        sampler = MemorySampler(server)
        sampler.start()
        began = time.monotonic()
        for wave in range(1, args.waves + 1):
            with ThreadPoolExecutor(max_workers=args.clients) as pool:
                futures = [
                    pool.submit(run_job, server.url, wave, client, args.frames, args.steps, args.job_timeout,
                                walk_of(args.walk, client))
                    for client in range(args.clients)
                ]
                outcomes += [future.result(timeout=args.job_timeout + 60) for future in futures]
            time.sleep(1.0)  # let the queue settle before reading memory
            rss_after_wave.append(server.rss_mb())
        wall_s = time.monotonic() - began
        rss_peak = sampler.stop()
        server_alive = server.process.poll() is None

    completed = [o for o in outcomes if o.kind == "completed"]
    refused = [o for o in outcomes if o.kind == "refused"]
    failed = [o for o in outcomes if o.kind not in ("completed", "refused")]
    growth = rss_after_wave[-1] - rss_after_wave[0]
    figures = {
        "walk": args.walk,
        "clients per wave": args.clients,
        "waves": args.waves,
        "jobs": len(outcomes),
        "completed (checked)": len(completed),
        "refused, queue full": len(refused),
        "lost, hung or wrong": len(failed),
        "refusal time, max (s)": round(max((o.seconds for o in refused), default=float("nan")), 2),
        "completed job time, median (s)": round(statistics.median(o.seconds for o in completed), 2) if completed else "n/a",
        "completed job time, max (s)": round(max((o.seconds for o in completed), default=float("nan")), 2),
        "frames rendered per second": round(
            sum(job_for(walk_of(args.walk, o.client), o.client, args.frames, args.steps)[2] for o in completed)
            / wall_s, 2),
        "wall time (s)": round(wall_s, 1),
        "server memory after warm-up (MiB)": round(rss_start),
        "server memory peak (MiB)": round(rss_peak),
        "server memory after each wave (MiB)": ", ".join(str(round(value)) for value in rss_after_wave),
        "server still up": server_alive,
    }
    print(f"load test: {args.clients} clients x {args.waves} waves, queue {args.queue_size}, "
          f"{args.frames} frames x {args.steps} steps at 64x64, walk {args.walk}, model {args.model}")
    for name, value in figures.items():
        print(f"  {name:38s} {value}")
    for outcome in failed:
        print(f"  FAILED wave {outcome.wave} client {outcome.client}: {outcome.kind} {outcome.detail}")

    ok = not failed and server_alive and growth <= args.max_growth_mb and bool(completed)
    if growth > args.max_growth_mb:
        print(f"  FAILED memory grew {growth:.0f} MiB from wave 1 to wave {args.waves}")
    if args.write:
        write_section(args.write, args, figures, ok)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def write_section(path: Path, args: argparse.Namespace, figures: dict, ok: bool) -> None:
    """Replace (or append) the '## Load test' section of a Markdown file, keeping the rest."""
    rows = "\n".join(f"| {name} | {value} |" for name, value in figures.items())
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    section = (
        f"{HEADING}\n\n"
        f"`python benchmarks/load_test.py --clients {args.clients} --waves {args.waves} "
        f"--queue-size {args.queue_size} --frames {args.frames} --steps {args.steps}"
        f"{'' if args.walk == 'chain' else ' --walk ' + args.walk}` "
        f"({time.strftime('%Y-%m-%d')}, {machine}, model `{args.model}`, CPU; result: {'PASS' if ok else 'FAIL'}).\n\n"
        "Each wave starts all clients at once against one server (one morph at a time, "
        f"queue of {args.queue_size}). A job counts as completed only when its GIF has the asked "
        "frame count and its manifest names its prompts and seed; a refused job must carry "
        "Gradio's \"Queue is full\" message.\n\n"
        f"| figure | value |\n| --- | --- |\n{rows}\n"
    )
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    sys.exit(main())
