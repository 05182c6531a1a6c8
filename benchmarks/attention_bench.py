"""Attention interpolation against plain attention, with linear and even spacing, measured in one run.

    python -m benchmarks.attention_bench                      # bundled shapes64, writes BENCHMARKS.md and docs/
    python -m benchmarks.attention_bench --model scenes       # another bundled model (same pairs vocabulary)
    python -m benchmarks.attention_bench --quick --no-write   # a fast check of the script
    python -m benchmarks.attention_bench --tune               # the variant sweep behind pipelines/attention.py

For every morph (the smoothness benchmark's prompt pairs, plus held-out pairs the
attention knobs were not tuned on, each with two seed pairs) it renders
{plain, interpolate} x {linear, even} side by side, each from an empty frame cache,
and reports per configuration: median and worst jump ratio J (largest gap / mean gap,
pixel RMSE), the number of cuts (gaps over CUT_FACTOR x the morph's median gap),
smoothness as 1 - Gini of the gaps (AID's measure, on pixel RMSE), the endpoint PSNR
against plain `pipe(prompt=...)` renders, wall time and frames denoised (anchors
included: rows through the UNet, counted with a forward hook).

`--tune` renders interpolate + linear (and, for the best variants, + even) on the
tuning pairs for each variant of the knobs in pipelines/attention.py and prints a table;
`--set NAME=VALUE` overrides a knob for any run.

Raw figures are checkpointed to the json after every morph (`--resume` continues a
run that stopped). Not part of the default test run: it keeps the CPU busy for long.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from benchmarks.morph_bench import PAIRS, SEED_PAIRS, machine, plain_render, table  # noqa: E402
from pipelines import attention, metrics  # noqa: E402
from pipelines.cache import FrameCache, model_fingerprint  # noqa: E402
from pipelines.engine import Morpher  # noqa: E402
from pipelines.loading import LoadedModel, load_model  # noqa: E402
from pipelines.request import MorphRequest  # noqa: E402

DOCS = ROOT / "docs"
# Held-out pairs: never rendered while the knobs were tuned (tuning used TUNING_PAIRS only).
HELD_OUT_PAIRS = [
    ("a green circle", "a yellow square"),
    ("a small red star", "a large blue triangle on a white background"),
    ("a white square on a purple background", "a black star on a yellow background"),
    ("a large orange triangle on a checkered background", "a small green circle"),
]
# The pairs the knobs were tuned on: the first half of the smoothness benchmark's pairs.
TUNING_PAIRS = PAIRS[:4]
# The landscape model speaks another caption language (pipelines/toy/scenes_data.py); its
# pairs avoid the time x terrain pairs held out of its training. Nothing was tuned on them.
SCENES_PAIRS = [
    ("a sunset over the ocean", "mountains at night"),
    ("a foggy forest at dawn", "the desert at noon"),
    ("green hills at noon", "a city skyline at night"),
    ("a lake in the morning", "snowy mountains at dusk"),
    ("a sunrise over fields", "the ocean at night"),
    ("a rainy city at dusk", "sand dunes at sunset"),
    ("mountains in the morning", "a forest at sunset"),
    ("the ocean at noon", "hills at dusk"),
]
SCENES_HELD_OUT_PAIRS = [
    ("a sunset over a lake", "a forest at night"),
    ("the desert at dawn", "snowy mountains at noon"),
    ("the city at sunset", "hills in the morning"),
    ("a foggy lake at dawn", "mountains at sunset"),
]


def pair_sets(spec: str | None) -> tuple[list, list]:
    """(benchmark pairs, held-out pairs) in the caption language of the model `spec` names."""
    if spec and "scenes" in spec:
        return SCENES_PAIRS, SCENES_HELD_OUT_PAIRS
    return PAIRS, HELD_OUT_PAIRS


CONFIGS = [("plain", "linear"), ("interpolate", "linear"), ("plain", "even"), ("interpolate", "even")]
# A gap this many times the morph's median gap is a cut (the definition).
CUT_FACTOR = 3.0


# ---------------------------------------------------------------- measuring


def gini(values: list[float]) -> float:
    """Gini coefficient of non-negative values: 0 when all are equal, near 1 when one holds everything."""
    array = np.sort(np.asarray(values, dtype=np.float64))
    if array.size == 0 or array.sum() <= 0:
        return math.nan
    ranks = np.arange(1, array.size + 1)
    return float((2 * ranks - array.size - 1).dot(array) / (array.size * array.sum()))


def cuts(gaps: list[float]) -> int:
    """Gaps over CUT_FACTOR x the median gap."""
    middle = float(np.median(gaps))
    return int(sum(gap > CUT_FACTOR * middle for gap in gaps)) if middle > 0 else 0


class RowCounter:
    """Rows through the UNet (frames and anchors, both guidance halves), by a forward pre-hook."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet
        self.rows = 0
        self.calls = 0

    def __enter__(self) -> "RowCounter":
        def count(_module, args, kwargs) -> None:
            sample = kwargs.get("sample", args[0] if args else None)
            self.rows += int(sample.shape[0])
            self.calls += 1

        self.handle = self.unet.register_forward_pre_hook(count, with_kwargs=True)
        return self

    def __exit__(self, *_) -> None:
        self.handle.remove()


def measure(model: LoadedModel, request: MorphRequest, references: list[Image.Image]) -> dict:
    """One morph from an empty frame cache: smoothness figures, cost and the frames."""
    morpher = Morpher(model, cache=FrameCache())
    with RowCounter(model.pipe.unet) as counter:
        began = time.perf_counter()
        result = morpher.render(request)
        seconds = time.perf_counter() - began
    gaps = result.manifest["metrics"]["gaps"]
    record = result.manifest["render"]
    halves = 2 if request.guidance > 1 else 1
    ends = [result.frames[0].image, result.frames[-1].image]
    return {
        "jump_ratio": metrics.jump_ratio(gaps),
        "cuts": cuts(gaps),
        "directness": result.manifest["metrics"]["directness"],
        "smoothness": 1.0 - gini(gaps),
        "gaps": gaps,
        "t": [frame.t for frame in result.frames],
        "seconds": seconds,
        "frames_out": len(result.frames),
        "frames_rendered": record["frames_rendered"],
        "frames_denoised": counter.rows / (halves * request.steps),  # anchors included
        "pipeline_calls": record["pipeline_calls"],
        "endpoint_psnr": min(metrics.psnr(a, b) for a, b in zip(ends, references)),
        "images": [frame.image for frame in result.frames],
    }


def references_for(model: LoadedModel, request: MorphRequest) -> list[Image.Image]:
    return [plain_render(model.pipe, prompt, seed, request) for prompt, seed in zip(request.prompts, request.seeds)]


def morph_row(model: LoadedModel, base: MorphRequest, prompts, seeds, configs, held_out: bool) -> dict:
    """Every configuration of one morph, side by side."""
    request = replace(base, prompts=tuple(prompts), seeds=tuple(seeds))
    references = references_for(model, request)
    row: dict[str, Any] = {"prompts": list(prompts), "seeds": list(seeds), "held_out": held_out}
    for mode, spacing in configs:
        row[f"{mode}+{spacing}"] = measure(model, replace(request, attention=mode, spacing=spacing), references)
    return row


# ---------------------------------------------------------------- knobs


def set_knob(text: str) -> tuple[str, Any]:
    """NAME=VALUE (a Python literal) onto pipelines.attention's module constant NAME."""
    name, _, value = text.partition("=")
    name = name.strip().upper()
    if not hasattr(attention, name):
        raise SystemExit(f"pipelines.attention has no knob {name}")
    parsed = ast.literal_eval(value)
    setattr(attention, name, parsed)
    return name, parsed


KNOBS = ("FUSED", "OUTER", "ANCHOR_QUERIES", "LAYERS", "HALVES", "INJECT_FROM", "INJECT_UNTIL", "ANCHOR_BOOST")
# The first implementation: AID's fused inner interpolation everywhere. Tuning variants change it.
AID_FUSED_INNER = {"FUSED": True, "OUTER": False, "ANCHOR_QUERIES": False, "LAYERS": ("self", "cross"),
                   "HALVES": "both", "INJECT_FROM": 0.0, "INJECT_UNTIL": 1.0, "ANCHOR_BOOST": 1.0}


def knob_state() -> dict:
    return {name: getattr(attention, name) for name in KNOBS}


# Variants the sweep tries, as changes to AID_FUSED_INNER; "attention": "plain" is the plain baseline,
# "beta": a re-times the frames' t by the Beta(a, a) inverse CDF (AID's prior; not an engine spacing).
TUNE_VARIANTS: list[dict[str, Any]] = [
    {"attention": "plain"},
    {},
    {"HALVES": "cond"},
    {"ANCHOR_BOOST": 16.0},
    {"OUTER": True},
    {"FUSED": False},
    {"FUSED": False, "INJECT_UNTIL": 0.5},
    {"FUSED": False, "INJECT_FROM": 0.5},
    {"OUTER": True, "FUSED": False, "LAYERS": ("self",)},
    {"ANCHOR_QUERIES": True},
    {"ANCHOR_QUERIES": True, "LAYERS": ("self",)},
    {"ANCHOR_QUERIES": True, "LAYERS": ("self",), "INJECT_UNTIL": 0.5},
    {"ANCHOR_QUERIES": True, "LAYERS": ("self",), "beta": 1.5},
]


def beta_times(frames: int, a: float) -> list[float]:
    """AID's prior: t_i = F^-1(i / (frames - 1)) for the Beta(a, a) distribution (a > 1: more frames mid-way)."""
    from scipy.stats import beta

    return [0.0, *[float(beta.ppf(i / (frames - 1), a, a)) for i in range(1, frames - 1)], 1.0]


def measure_at(model: LoadedModel, request: MorphRequest, times: list[float]) -> dict:
    """J and cuts of a two-key morph rendered at the given t (a spacing the engine does not offer)."""
    from pipelines.walks import get_walk

    morpher = Morpher(model)
    walk = get_walk("chain")
    job = morpher.start_job(morpher.resolve(request), walk)
    frames = list(morpher.render_points([walk.at(request, 0, t) for t in times], job))
    gaps = metrics.frame_gaps([frame.image for frame in frames])
    return {"jump_ratio": metrics.jump_ratio(gaps), "cuts": cuts(gaps), "smoothness": 1.0 - gini(gaps),
            "directness": metrics.directness(gaps, metrics.rmse(frames[0].image, frames[-1].image)),
            "gaps": gaps, "t": times}


def tune(model: LoadedModel, base: MorphRequest, variants: list[dict], spacing: str, out: Path) -> list[dict]:
    """Each variant on the tuning pairs: median and worst J, cuts; checkpointed to `out`."""
    done = json.loads(out.read_text()) if out.exists() else []
    saved = knob_state()
    for variant in variants:
        if any(entry["variant"] == variant and entry["spacing"] == spacing for entry in done):
            continue
        knobs = {name: value for name, value in variant.items() if name in KNOBS}
        for name, value in {**AID_FUSED_INNER, **knobs}.items():
            setattr(attention, name, value)
        began = time.perf_counter()
        morphs = []
        for prompts in TUNING_PAIRS:
            for seeds in SEED_PAIRS:
                request = replace(base, prompts=prompts, seeds=seeds, spacing=spacing,
                                  attention=variant.get("attention", "interpolate"))
                if "beta" in variant:
                    figures = measure_at(model, request, beta_times(request.frames, variant["beta"]))
                else:
                    figures = measure(model, request, references_for(model, request))
                    figures.pop("images")
                morphs.append({"prompts": list(prompts), "seeds": list(seeds), **figures})
        entry = {"variant": variant, "spacing": spacing, "knobs": knob_state(), "morphs": morphs,
                 "median_j": statistics.median(m["jump_ratio"] for m in morphs),
                 "worst_j": max(m["jump_ratio"] for m in morphs),
                 "cuts": sum(m["cuts"] for m in morphs),
                 "smoothness": statistics.median(m["smoothness"] for m in morphs),
                 "seconds": time.perf_counter() - began}
        done.append(entry)
        out.write_text(json.dumps(done, indent=1, default=str) + "\n")
        print(f"  {variant or 'AID fused inner'} {spacing}: median J {entry['median_j']:.2f}, worst "
              f"{entry['worst_j']:.2f}, cuts {entry['cuts']}, 1-Gini {entry['smoothness']:.3f} "
              f"({entry['seconds']:.0f} s)", file=sys.stderr, flush=True)
    for name, value in saved.items():
        setattr(attention, name, value)
    return done


# ---------------------------------------------------------------- the run


def morph_list(spec: str | None, quick: bool) -> list[tuple[tuple[str, str], tuple[int, int], bool]]:
    """(prompts, seeds, held out) of every morph: the smoothness benchmark's, then the held-out ones."""
    pairs, held_out = pair_sets(spec)
    if quick:
        return [(pairs[0], SEED_PAIRS[0], False), (held_out[0], SEED_PAIRS[0], True)]
    return ([(pair, seeds, False) for pair in pairs for seeds in SEED_PAIRS]
            + [(pair, seeds, True) for pair in held_out for seeds in SEED_PAIRS])


def run(model: LoadedModel, base: MorphRequest, morphs, out: Path, header: dict, resume: bool) -> list[dict]:
    """Every morph in every configuration; the raw json is rewritten after each morph."""
    rows = json.loads(out.read_text())["morphs"] if resume and out.exists() else []
    done = {(tuple(row["prompts"]), tuple(row["seeds"])) for row in rows}
    for prompts, seeds, held_out in morphs:
        if (tuple(prompts), tuple(seeds)) in done:
            continue
        row = morph_row(model, base, prompts, seeds, CONFIGS, held_out)
        for name, _ in CONFIGS_NAMED:
            row[name].pop("images")
        rows.append(row)
        out.write_text(json.dumps({**header, "morphs": rows}, indent=1, default=str) + "\n")
        print(f"  {prompts[0]!r} -> {prompts[1]!r} {seeds}: " + ", ".join(
            f"{name} J {row[name]['jump_ratio']:.2f} ({row[name]['cuts']} cuts, {row[name]['seconds']:.0f} s)"
            for name, _ in CONFIGS_NAMED), file=sys.stderr, flush=True)
    return rows


CONFIGS_NAMED = [(f"{mode}+{spacing}", (mode, spacing)) for mode, spacing in CONFIGS]


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
        f"{len(rows)} morphs: the smoothness benchmark's {len({tuple(r['prompts']) for r in rows if not r['held_out']})} "
        f"prompt pairs (the first {len(TUNING_PAIRS)} were the tuning pairs) and "
        f"{len({tuple(r['prompts']) for r in rows if r['held_out']})} held-out pairs, each with seed pairs "
        f"{', '.join(' '.join(map(str, s)) for s in SEED_PAIRS)}; every configuration rendered from an empty frame "
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


def load(spec: str | None) -> LoadedModel:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    model = load_model(spec, device="cpu")
    model.pipe.set_progress_bar_config(disable=True)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attention_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model spec (default: the bundled shapes64)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=16, help="frames per morph (16)")
    parser.add_argument("--quick", action="store_true", help="two morphs, 8 frames: checks the script")
    parser.add_argument("--tune", action="store_true", help="the knob sweep on the tuning pairs")
    parser.add_argument("--tune-spacing", default="linear", choices=("linear", "even"))
    parser.add_argument("--variants", default=None, help="tune: a Python list of knob dicts (default: the sweep)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a knob")
    parser.add_argument("--gif-spacing", default="linear", choices=("linear", "even"))
    parser.add_argument("--out", default=None, help="raw json (default benchmarks/attention_bench[_MODEL].json)")
    parser.add_argument("--resume", action="store_true", help="keep the morphs already in the raw json")
    parser.add_argument("--no-write", action="store_true", help="print only; write no docs or BENCHMARKS.md")
    args = parser.parse_args(argv)
    for text in args.set:
        set_knob(text)
    model = load(args.model)
    frames = min(args.frames, 8) if args.quick else args.frames
    base = Morpher(model).resolve(MorphRequest(prompts=pair_sets(args.model)[0][0], seeds=SEED_PAIRS[0], frames=frames,
                                              steps=args.steps))
    if args.tune:
        variants = ast.literal_eval(args.variants) if args.variants else TUNE_VARIANTS
        out = Path(args.out) if args.out else ROOT / "benchmarks" / f"attention_tune_{args.tune_spacing}.json"
        tune(model, base, variants, args.tune_spacing, out)
        return 0
    Morpher(model).render(replace(base, frames=3, attention="interpolate"))  # warm-up: lazy initialisation
    where = outputs(model.name)
    scratch = Path(tempfile.gettempdir()) / "attention_bench_quick.json"
    out = Path(args.out) if args.out else scratch if args.quick or args.no_write else where["raw"]
    header = {"model": model.name, "fingerprint": model_fingerprint(model.pipe), "machine": machine(),
              "knobs": knob_state(), "size": f"{base.width}x{base.height}", "steps": base.steps,
              "guidance": base.guidance, "frames": base.frames}
    began = time.perf_counter()
    rows = run(model, base, morph_list(args.model, args.quick), out, header, args.resume)
    argv_used = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python -m benchmarks.attention_bench", *argv_used]).strip()
    tuning = []  # the sweep ran on the bundled model's tuning pairs only
    for spacing in ("linear", "even") if not args.model or args.model.endswith("shapes64") else ():
        path = ROOT / "benchmarks" / f"attention_tune_{spacing}.json"
        if path.exists():
            tuning += json.loads(path.read_text())
    section = markdown(header, rows, tuning, command, args.gif_spacing)
    print(section)
    print(f"wall time {time.perf_counter() - began:.0f} s", file=sys.stderr)
    if not args.no_write:
        DOCS.mkdir(exist_ok=True)
        plot_gaps(showcase(rows), ROOT / where["gaps"])
        side_by_side_gif(model, base, showcase(rows), args.gif_spacing, ROOT / where["gif"])
        write_markdown_section(ROOT / "BENCHMARKS.md", section, where["start"], where["end"])
    return 0


def write_markdown_section(path: Path, section: str, start: str, end: str) -> None:
    """Replace this benchmark's part of BENCHMARKS.md; the first time, put it before the load test (or at the end)."""
    text = path.read_text()
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    elif "\n## Load test" in text:
        head, tail = text.split("\n## Load test", 1)
        text = head.rstrip("\n") + "\n\n" + section + "\n\n## Load test" + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
