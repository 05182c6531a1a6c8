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
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.attention_measure import CONFIGS, CONFIGS_NAMED, morph_row, pair_sets  # noqa: E402
from benchmarks.attention_report import DOCS, markdown, outputs, plot_gaps, showcase, side_by_side_gif  # noqa: E402
from benchmarks.sections import before_heading, replace_section  # noqa: E402
from benchmarks.attention_tune import TUNE_VARIANTS, knob_state, set_knob, tune  # noqa: E402
from benchmarks.morph_bench import SEED_PAIRS, machine  # noqa: E402
from pipelines.cache import model_fingerprint  # noqa: E402
from pipelines.engine import Morpher  # noqa: E402
from pipelines.loading import LoadedModel, load_model  # noqa: E402
from pipelines.request import MorphRequest  # noqa: E402

# ---------------------------------------------------------------- the run


def morph_list(spec: str | None, quick: bool, seed_pairs: int = len(SEED_PAIRS)
               ) -> list[tuple[tuple[str, str], tuple[int, int], bool]]:
    """(prompts, seeds, held out) of every morph: the smoothness benchmark's, then the held-out ones."""
    pairs, held_out = pair_sets(spec)
    if quick:
        return [(pairs[0], SEED_PAIRS[0], False), (held_out[0], SEED_PAIRS[0], True)]
    seeds_used = SEED_PAIRS[:seed_pairs]
    return ([(pair, seeds, False) for pair in pairs for seeds in seeds_used]
            + [(pair, seeds, True) for pair in held_out for seeds in seeds_used])


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
    parser.add_argument("--seed-pairs", type=int, default=len(SEED_PAIRS), choices=range(1, len(SEED_PAIRS) + 1),
                        help="seed pairs per prompt pair (fewer: a shorter run)")
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
    rows = run(model, base, morph_list(args.model, args.quick, args.seed_pairs), out, header, args.resume)
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
        replace_section(ROOT / "BENCHMARKS.md", section, where["start"], where["end"], before_heading("## Load test"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
