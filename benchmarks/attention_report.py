"""The attention benchmark's report: tables, targets, the per-gap plot, the side-by-side GIF
and the BENCHMARKS.md section."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.attention_measure import CONFIGS_NAMED, CUT_FACTOR, TUNING_PAIRS
from benchmarks.morph_bench import SEED_PAIRS, table
from pipelines import metrics
from pipelines.engine import Morpher
from pipelines.loading import LoadedModel

from pipelines.request import MorphRequest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# ---------------------------------------------------------------- reporting


def median(values) -> float:
    values = [value for value in values if value is not None and not math.isnan(value)]
    return statistics.median(values) if values else math.nan


def time_ratio(row: dict, name: str, against: str = "plain+linear") -> float:
    return row[name]["seconds"] / row[against]["seconds"]


def summary(rows: list[dict], name: str) -> dict:
    """One configuration over a set of morphs."""
    picked = [row[name] for row in rows]
    return {
        "morphs": len(picked),
        "median_j": median(p["jump_ratio"] for p in picked),
        "worst_j": max(p["jump_ratio"] for p in picked),
        "with_cut": sum(p["cuts"] > 0 for p in picked),
        "cuts": sum(p["cuts"] for p in picked),
        "smoothness": median(p["smoothness"] for p in picked),
        "directness": median(p["directness"] for p in picked),
        "psnr": min(p["endpoint_psnr"] for p in picked),
        "time": median(time_ratio(row, name) for row in rows),
        "denoised": median(p["frames_denoised"] / p["frames_out"] for p in picked),
    }


def targets(rows: list[dict]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for the issue's targets, over every morph."""
    lin, even = summary(rows, "interpolate+linear"), summary(rows, "interpolate+even")
    plain = summary(rows, "plain+linear")
    slower = median(time_ratio(row, "interpolate+even") for row in rows)
    own = median(time_ratio(row, "interpolate+even", "interpolate+linear") for row in rows)
    psnr = min(summary(rows, name)["psnr"] for name, _ in CONFIGS_NAMED)
    return [
        ("interpolate + linear: median J <= 1.5", f"{lin['median_j']:.2f} (plain + linear {plain['median_j']:.2f})",
         lin["median_j"] <= 1.5),
        ("interpolate + even: worst J < 1.5", f"{even['worst_j']:.2f} (median {even['median_j']:.2f})",
         even["worst_j"] < 1.5),
        ("interpolate + even: no cuts", f"{even['cuts']} cuts in {even['with_cut']} of {even['morphs']} morphs",
         even["cuts"] == 0),
        ("interpolate + even: wall time <= 2.1x linear", f"{slower:.2f}x plain + linear ({own:.2f}x interpolate "
         "+ linear)", slower <= 2.1),
        ("keyframes are the plain renders (>= 40 dB)", "min " + _db(psnr) + " dB", psnr >= 40),
    ]


def _db(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.1f}"


def summary_table(rows: list[dict]) -> str:
    sets = [("tuning pairs", [r for r in rows if tuple(r["prompts"]) in TUNING_PAIRS]),
            ("other benchmark pairs", [r for r in rows if not r["held_out"] and tuple(r["prompts"]) not in TUNING_PAIRS]),
            ("held-out pairs", [r for r in rows if r["held_out"]]),
            ("all", rows)]
    body = []
    for label, chosen in sets:
        if not chosen:
            continue
        for name, _ in CONFIGS_NAMED:
            figures = summary(chosen, name)
            body.append([label, name, figures["morphs"], f"{figures['median_j']:.2f}", f"{figures['worst_j']:.2f}",
                         f"{figures['with_cut']} ({figures['cuts']})", f"{figures['smoothness']:.3f}",
                         f"{figures['directness']:.2f}", _db(figures["psnr"]), f"{figures['time']:.2f}x",
                         f"{figures['denoised']:.2f}x"])
    return table(["morphs", "configuration", "n", "median J", "worst J", "morphs with a cut (cuts)",
                  "1 - Gini", "R", "endpoint PSNR (dB)", "time vs plain+linear", "frames denoised / frame"], body)


def morph_table(rows: list[dict]) -> str:
    names = [name for name, _ in CONFIGS_NAMED]
    return table(
        ["prompts", "seeds", "set", *[f"J {name}" for name in names], *[f"cuts {name}" for name in names],
         "time interpolate+even"],
        [[" -> ".join(row["prompts"]), " ".join(map(str, row["seeds"])),
          "held out" if row["held_out"] else "tuning" if tuple(row["prompts"]) in TUNING_PAIRS else "bench",
          *[f"{row[name]['jump_ratio']:.2f}" for name in names], *[str(row[name]["cuts"]) for name in names],
          f"{time_ratio(row, 'interpolate+even'):.2f}x"] for row in rows])


def tuning_table(entries: list[dict]) -> str:
    return table(
        ["variant (changes to AID fused inner)", "spacing", "median J", "worst J", "cuts", "1 - Gini", "R"],
        [[", ".join(f"{k}={v}" for k, v in entry["variant"].items()) or "AID fused inner", entry["spacing"],
          f"{entry['median_j']:.2f}", f"{entry['worst_j']:.2f}", entry["cuts"], f"{entry['smoothness']:.3f}",
          f"{median(m.get('directness') for m in entry['morphs']):.2f}"] for entry in entries])


def showcase(rows: list[dict]) -> dict:
    """A morph with a cut in plain + linear where interpolate + linear lowers J the most."""
    cut = [row for row in rows if row["plain+linear"]["cuts"]] or rows
    return max(cut, key=lambda row: row["plain+linear"]["jump_ratio"] / row["interpolate+linear"]["jump_ratio"])


def plot_gaps(row: dict, path: Path) -> None:
    """Per-gap curves (gap / mean gap) of one morph: plain against interpolate, linear and even."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    colours = {"plain": "tab:blue", "interpolate": "tab:red"}
    for axis, spacing in zip(axes, ("linear", "even")):
        for mode in ("plain", "interpolate"):
            result = row[f"{mode}+{spacing}"]
            gaps = np.asarray(result["gaps"])
            axis.plot(range(1, len(gaps) + 1), gaps / gaps.mean(), marker="o", markersize=3, color=colours[mode],
                      label=f"{mode}: J {result['jump_ratio']:.2f}, {result['cuts']} cuts")
        axis.axhline(1.5, color="grey", linestyle="--", linewidth=1)
        axis.set_title(f"{spacing} spacing", fontsize=9)
        axis.set_xlabel("gap (frame i-1 to i)")
        axis.set_ylabel("gap / mean gap (pixel RMSE)")
        axis.legend(fontsize=8)
    for mode in ("plain", "interpolate"):
        axes[2].plot(row[f"{mode}+even"]["t"], marker="o", markersize=3, color=colours[mode], label=f"{mode} + even")
    axes[2].set_title("t of each frame (even)", fontsize=9)
    axes[2].set_xlabel("frame")
    axes[2].set_ylabel("t")
    axes[2].legend(fontsize=8)
    figure.suptitle(f"{' -> '.join(row['prompts'])}, seeds {' '.join(map(str, row['seeds']))}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def side_by_side_gif(model: LoadedModel, base: MorphRequest, row: dict, spacing: str, path: Path,
                     scale: int = 3) -> None:
    """Plain left, interpolate right, same frames count and spacing (re-rendered: renders are deterministic)."""
    from pipelines.media import write_media

    request = replace(base, prompts=tuple(row["prompts"]), seeds=tuple(row["seeds"]), spacing=spacing)
    films = {mode: Morpher(model).render(replace(request, attention=mode)) for mode in ("plain", "interpolate")}
    images = []
    labels = {mode: f"{mode}  J {metrics.jump_ratio(films[mode].manifest['metrics']['gaps']):.1f}"
              for mode in films}
    for left, right in zip(films["plain"].frames, films["interpolate"].frames):
        width, height = left.image.width * scale, left.image.height * scale
        canvas = Image.new("RGB", (2 * width + 8, height + 18), (255, 255, 255))
        canvas.paste(left.image.resize((width, height), Image.NEAREST), (0, 18))
        canvas.paste(right.image.resize((width, height), Image.NEAREST), (width + 8, 18))
        draw = ImageDraw.Draw(canvas)
        draw.text((4, 3), labels["plain"], fill=(0, 0, 0))
        draw.text((width + 12, 3), labels["interpolate"], fill=(0, 0, 0))
        images.append(canvas)
    write_media(images, path, fps=6.0, loop=True)


def outputs(model_name: str) -> dict[str, Any]:
    """Where one model's results go: the bundled shapes64 without a suffix, any other model with its name."""
    name = model_name.split(":")[-1]
    suffix = "" if name == "shapes64" else "_" + "".join(c if c.isalnum() else "_" for c in name).strip("_")
    tag = f" {suffix[1:]}" if suffix else ""
    return {
        "raw": ROOT / "benchmarks" / f"attention_bench{suffix}.json",
        "gaps": f"docs/attention_gaps{suffix}.png",
        "gif": f"docs/plain_vs_interpolate{suffix}.gif",
        "start": f"<!-- attention-bench{tag}:start (written by python -m benchmarks.attention_bench) -->",
        "end": f"<!-- attention-bench{tag}:end -->",
        "title": "## Attention interpolation" + (f" ({name})" if suffix else ""),
    }


def markdown(header: dict, rows: list[dict], tuning: list[dict], command: str, gif_spacing: str) -> str:
    m, knobs = header["machine"], header["knobs"]
    where = outputs(header["model"])
    example = showcase(rows)
    tuned = (f"the smoothness benchmark's; the first {len(TUNING_PAIRS)} were the tuning pairs" if tuning
             else "none of them used in tuning the knobs")
    parts = [
        where["start"],
        where["title"],
        "",
        f"`{command}` ({m['date']}; {m['cpu']}, {m['cores_usable']} usable cores, {m['torch_threads']} torch "
        f"threads; Python {m['python']}, torch {m['torch']}, diffusers {m['diffusers']}; CPU, float32). Model "
        f"`{header['model']}` (weights {header['fingerprint'][:12]}), {header['size']}, {header['steps']} steps, "
        f"guidance {header['guidance']}, {header['frames']} frames. Knobs (pipelines/attention.py): "
        + ", ".join(f"{k}={v}" for k, v in knobs.items())
        + f". Raw figures: `{where['raw'].relative_to(ROOT)}`.",
        "",
        f"{len(rows)} morphs: {len({tuple(r['prompts']) for r in rows if not r['held_out']})} benchmark "
        f"prompt pairs ({tuned}) and "
        f"{len({tuple(r['prompts']) for r in rows if r['held_out']})} held-out pairs, each with seed pairs "
        f"{', '.join(' '.join(map(str, s)) for s in sorted({tuple(r['seeds']) for r in rows}))}; every "
        "configuration rendered from an empty frame "
        "cache in the same run. J = largest gap / mean gap on pixel RMSE; a cut is a gap over "
        f"{CUT_FACTOR:g}x the morph's median gap; 1 - Gini of the gaps (AID's smoothness; 1 is even); R = path "
        "length / keyframe distance; endpoint PSNR of the first and last frames against plain `pipe(prompt=...)` "
        "renders; time over the same morph's plain + linear render; frames denoised per output frame, "
        "anchors included.",
        "",
        "### Targets",
        "",
        table(["target", "measured", "met"], [[name, value, "yes" if ok else "**no**"]
                                              for name, value, ok in targets(rows)]),
        "",
        "### Summary",
        "",
        summary_table(rows),
        "",
        "### Per morph",
        "",
        morph_table(rows),
        "",
        f"![Per-gap curves, plain against interpolate]({where['gaps']})",
        "",
        f"Side by side (plain left, interpolate right, {gif_spacing} spacing, {header['frames']} frames), "
        f"{' -> '.join(example['prompts'])}, seeds {' '.join(map(str, example['seeds']))}: "
        f"![plain vs interpolate]({where['gif']})",
        "",
    ]
    if tuning:
        parts += ["### Tuning (the tuning pairs only)", "",
                  f"`python -m benchmarks.attention_bench --tune`: interpolate on the {len(TUNING_PAIRS)} tuning "
                  f"pairs x {len(SEED_PAIRS)} seed pairs, one variant of the knobs at a time (raw: "
                  "`benchmarks/attention_tune_*.json`).", "", tuning_table(tuning), ""]
    parts.append(where["end"])
    return "\n".join(parts)
