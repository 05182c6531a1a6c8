"""The BENCHMARKS.md section of `benchmarks/threads_bench.py`: tables and the targets, from its figures."""

from __future__ import annotations

import statistics

POLICY_NAMES = {"default": "torch's default (before)", "1": "1 thread", "auto": "auto (now)"}
WORKLOAD_NAMES = {
    "shapes64": "shapes64, 4 frames x 10 steps, 64 px",
    "scenes": "scenes, 16 frames x 20 steps, 128 px",
    "sd15-block": "SD 1.5 UNet down block 1, 64x64 latents, 2 rows, 2 passes",
}
MAX_BUSY_SLOWDOWN = 1.5  # one busy core may slow a render at most this much
MAX_QUIET_COST = 1.10  # the policy may cost at most 10% on a quiet machine


def median_of(figures: dict, load: int, workload: str, policy: str) -> float:
    for cell in figures["cells"]:
        if (cell["busy_cores"], cell["workload"], cell["policy"]) == (load, workload, policy):
            return statistics.median(cell["seconds"])
    return float("nan")


def threads_chosen(figures: dict, load: int, workload: str, policy: str) -> str:
    for cell in figures["cells"]:
        if (cell["busy_cores"], cell["workload"], cell["policy"]) == (load, workload, policy):
            return "/".join(str(count) for count in sorted(set(cell["threads"])))
    return "-"


def workload_table(figures: dict, workload: str) -> list[str]:
    lines = [f"**{WORKLOAD_NAMES.get(workload, workload)}**", "",
             "| policy | quiet | 1 busy core | 2 busy cores | 1 busy / quiet | 2 busy / quiet | threads used |",
             "|---|---|---|---|---|---|---|"]
    for policy, name in POLICY_NAMES.items():
        quiet, one, two = (median_of(figures, load, workload, policy) for load in (0, 1, 2))
        used = ", ".join(threads_chosen(figures, load, workload, policy) for load in (0, 1, 2))
        lines.append(f"| {name} | {quiet:.2f} s | {one:.2f} s | {two:.2f} s | {one / quiet:.2f}x | "
                     f"{two / quiet:.2f}x | {used} |")
    return lines + [""]


def targets(figures: dict) -> list[tuple[str, str, bool]]:
    rows = []
    for workload in dict.fromkeys(cell["workload"] for cell in figures["cells"]):
        quiet, one = median_of(figures, 0, workload, "auto"), median_of(figures, 1, workload, "auto")
        before = median_of(figures, 0, workload, "default")
        rows.append((f"{workload}: one busy core slows a render at most {MAX_BUSY_SLOWDOWN}x",
                     f"{one / quiet:.2f}x (before: {median_of(figures, 1, workload, 'default') / before:.1f}x)",
                     one / quiet <= MAX_BUSY_SLOWDOWN))
        same = threads_chosen(figures, 0, workload, "auto") == threads_chosen(figures, 0, workload, "default")
        note = " (the same threads as before: the difference is run-to-run noise)" if same else ""
        rows.append((f"{workload}: quiet time at most {MAX_QUIET_COST - 1:.0%} worse than before",
                     f"{quiet / before:.2f}x{note}", quiet / before <= MAX_QUIET_COST))
    return rows


def cli_table(figures: dict) -> list[str]:
    if not figures["cli"]:
        return []
    checkouts = list(dict.fromkeys(row["checkout"] for row in figures["cli"]))
    lines = ["The README's example, `python -m pipelines \"a sunset over the ocean\" \"a sunrise over mountains\" "
             "--out m.gif` (scenes, 16 frames, 20 steps), from process start to exit (imports, model load, "
             "render, GIF):", "",
             "| checkout | quiet | 1 busy core | 2 busy cores |", "|---|---|---|---|"]
    for checkout in checkouts:
        by_load = {row["busy_cores"]: row["seconds"] for row in figures["cli"] if row["checkout"] == checkout}
        name = f"before ({figures['before']})" if checkout == "before" else "now"
        lines.append(f"| {name} | " + " | ".join(f"{by_load.get(load, float('nan')):.1f} s" for load in (0, 1, 2))
                     + " |")
    return lines + [""]


def startup_line(figures: dict) -> str:
    quiet = [cell for cell in figures["cells"] if cell["busy_cores"] == 0 and cell["workload"] != "sd15-block"]
    if not quiet:
        return ""
    imports = statistics.median(cell["import_s"] for cell in quiet)
    loads = {cell["workload"]: cell["load_s"] for cell in quiet if cell["policy"] == "auto"}
    shown = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in loads.items())
    return (f"Start-up on the quiet machine: importing torch and the engine {imports:.1f} s (median of the "
            f"cells), loading a bundled model {shown}.")


def markdown(figures: dict, start: str, end: str) -> str:
    info = figures["machine"]
    lines = [start, "## Threads on a shared CPU", "",
             f"`python -m benchmarks.threads_bench`, {info['date']}, {info['cpu']}, {info['cores_usable']} cores, "
             f"torch {info['torch']}. A busy core is another process spinning in Python. Median render time "
             "of up to 3 renders (7 for the short shapes64 cells) after a warm-up, each cell in a fresh "
             "process. Runs: " + "; ".join(figures.get("runs", [])) + ".", "",
             "Why: torch's OpenMP workers spin at a barrier after every operation; when another process "
             "holds one of the two cores, the worker on that core is descheduled for whole time slices while "
             "its partner waits, and the thousands of small operations of a denoising step each pay for it. "
             "`auto` (`pipelines/threads.py`, the default of the CLI, the service and the Ray replicas) uses "
             "the cores other processes leave free, looked at before each render and at most every 0.5 s "
             "at step boundaries; `--threads N` / `LATENT_MORPH_THREADS=N` fixes the count.", ""]
    for workload in dict.fromkeys(cell["workload"] for cell in figures["cells"]):
        lines += workload_table(figures, workload)
    lines += cli_table(figures)
    lines += [startup_line(figures), "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'yes' if met else 'no'} |" for name, value, met in targets(figures)]
    return "\n".join(lines + ["", end])
