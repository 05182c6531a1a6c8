"""The variant sweep behind pipelines/attention.py's knobs: `python -m benchmarks.attention_bench --tune`.

Each variant renders interpolate on the tuning pairs; its median and worst J, cuts and
1 - Gini are checkpointed to benchmarks/attention_tune_<spacing>.json.
"""

from __future__ import annotations

import ast
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.attention_measure import TUNING_PAIRS, beta_times, measure, measure_at, references_for
from benchmarks.morph_bench import SEED_PAIRS
from pipelines import attention
from pipelines.loading import LoadedModel
from pipelines.request import MorphRequest

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
