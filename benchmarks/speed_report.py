"""The speed benchmark's Markdown section and plot (see benchmarks/speed_bench.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.sections import before_heading, replace_section

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- speed-bench:start (written by python -m benchmarks.speed_bench) -->"
END = "<!-- speed-bench:end -->"
PLOT = ROOT / "docs" / "speed_per_frame.png"
TARGET = 2.0  # exact speed-ups: at least this much faster than the stock pipeline batched 4 frames a call


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return "equal" if math.isinf(value) else f"{value:.1f}"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def best_exact(rows: list[dict]) -> dict:
    engine = [row for row in rows if row["exact"] and row["method"].startswith("engine")]
    return min(engine, key=lambda row: row["seconds"])


def targets(result: dict) -> list[list[Any]]:
    out = []
    for name, entry in result["models"].items():
        for frames in sorted({row["frames"] for row in entry["rows"]}):
            rows = [row for row in entry["rows"] if row["frames"] == frames]
            best = best_exact(rows)
            out.append([f"{name}, {frames} frames: exact speed-ups >= {TARGET:g}x the stock pipeline batched 4",
                        f"{best['vs_stock_batched']:.2f}x ({best['method']})",
                        "yes" if best["vs_stock_batched"] >= TARGET else "no"])
    return out


def morph_table(rows: list[dict]) -> str:
    body = []
    for row in rows:
        psnr = row["psnr_vs_exact"]
        keyframes = " / ".join(_db(value) for value in row["keyframe_psnr_db"])
        body.append([row["frames"], row["method"], "exact" if row["exact"] else "approximate",
                     f"{row['seconds']:.2f}", f"{1000 * row['s_per_frame']:.0f}", f"{row['vs_stock_batched']:.2f}x",
                     f"{_db(psnr['mean_db'])} / {_db(psnr['min_db'])}", keyframes, f"{row['jump_ratio']:.2f}"])
    return table(["frames", "method", "kind", "time (s)", "ms / frame", "vs stock batched 4",
                  "PSNR vs exact, mean / worst (dB)", "keyframes vs plain (dB)", "J"], body)


def unet_table(rows: list[dict]) -> str:
    body = [[row["network"], row["rows"], row["variant"], f"{row['ms_per_call']:.1f}", f"{row['ms_per_row']:.2f}",
             f"{row['gflop_per_call']:.2f}",
             f"{row['gflops']:.1f}", f"{row['peak_gflops']:.0f}", f"{row['share_of_peak']:.0%}",
             f"{row['first_call_s']:.1f}"] for row in rows]
    return table(["network", "rows", "variant", "ms / call", "ms / row", "GFLOP / call", "GFLOP/s", "peak GFLOP/s (matmul)",
                  "share of peak", "first call (s)"], body)


def compile_line(name: str, cost: dict | None) -> str:
    if not cost:
        return ""
    cold, warm = cost["cold"], cost["warm"]
    return (f"Compile cost ({name}, a 4-frame render's first call minus its second): cold cache "
            f"{cold['compile_s']:.0f} s, warm cache (a new process) {warm['compile_s']:.0f} s.")


def lanes_line(started: dict | None) -> str:
    if not started:
        return ""
    kinds = ", ".join(f"{kind} {seconds:.1f} s" for kind, seconds in sorted(started.items()))
    return (f"Lanes' start (spawning the worker, its imports and UNet copy; compiled: and its compile, from the "
            f"cache this run had warmed): {kinds}.")


def openvino_line(prepared: dict | None) -> str:
    if not prepared:
        return ""
    return (f"OpenVINO's preparation (convert, then compile for the engine's call shape: its first call): "
            f"{prepared['cold']:.1f} s with an empty cache, "
            f"{prepared['warm']:.1f} s from the converted model an earlier process left on disk.")


def markdown(result: dict) -> str:
    info = result["machine"]
    parts = [START, "## Speed at equal work", "",
             f"`python -m benchmarks.speed_bench` ({info['date']}; {info['cpu']}, {info['cores_usable']} usable cores, "
             f"{info['torch_threads']} torch threads; torch {info['torch']}, diffusers {info['diffusers']}). "
             f"{result['steps']} steps, guidance 5, each model's own size, a 2-prompt chain at linear spacing; "
             f"every method renders the same frames; best of {result['repeats']} alternating repeats. "
             f"Raw figures: `benchmarks/speed_bench.json`. Run time: {result['seconds'] / 60:.0f} min.", "",
             table(["target", "measured", "met"], targets(result)), ""]
    for name, entry in result["models"].items():
        parts += [f"### {name}", "", morph_table(entry["rows"]), "", unet_table(entry["unet"]), ""]
        lines = (compile_line(name, entry.get("compile_cost")), lanes_line(entry.get("lane_start_s")),
                 openvino_line(entry.get("openvino_prepare_s")))
        for line in lines:
            parts += [line, ""] if line else []
    if result.get("sd15_block"):
        parts += ["### A real-size SD 1.5 UNet block", "", unet_table(result["sd15_block"]), ""]
    parts += [f"![Time per frame by method]({PLOT.relative_to(ROOT).as_posix()})", "", END]
    return "\n".join(parts)


def plot(result: dict, path: Path = PLOT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, frames) for name, entry in result["models"].items()
              for frames in sorted({row["frames"] for row in entry["rows"]})]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False)
    for axis, (name, frames) in zip(axes[0], panels):
        rows = [row for row in result["models"][name]["rows"] if row["frames"] == frames]
        colours = ["#888888" if row["method"].startswith("stock") else "#2a7ab9" if row["exact"] else "#e08a2c"
                   for row in rows]
        axis.barh([row["method"] for row in rows], [1000 * row["s_per_frame"] for row in rows], color=colours)
        axis.invert_yaxis()
        axis.set_title(f"{name}, {frames} frames")
        axis.set_xlabel("ms per frame (grey: stock pipeline, blue: exact, orange: approximate)", fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(result: dict, text: str) -> None:
    plot(result)
    replace_section(ROOT / "BENCHMARKS.md", text, START, END, before_heading("## The scenes model (landscapes, 128 px)"))
