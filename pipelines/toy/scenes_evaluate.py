"""Score the `scenes` model: does the sky show the time asked for, the ground the terrain, and
does "a sunset over the ocean" -> "a sunrise over mountains" pass through something between?

    python -m pipelines.toy.scenes_evaluate [--model FOLDER] [--seeds 0 1 2] [--quick]
                                            [--grid sheet.png] [--json report.json] [--markdown figures.md]
                                            [--no-morph]

1. Renders one prompt per time x terrain pair (54, the held-out pairs among them) for each
   seed, 20 steps, guidance 5, 128 px, with the plain diffusers pipeline; the phrasing turns
   with the seed ("a sunset over the ocean", "the ocean at sunset", "sunset over the sea",
   ...). `--quick` renders the tests' set: half the trained pairs (each time 4-5 times, each
   terrain 3 times) and the 4 held-out pairs, one seed: 29 renders.
2. Reads each render with `pipelines.toy.scenes_measure` and prints the share whose sky reads
   as the time asked and whose ground reads as the terrain asked, per time, per terrain,
   for the trained pairs and for the held-out ones; and the issue's own words: night dark,
   noon blue and bright, sunset warm.
   The same pairs drawn by the generator and passed through the model's own VAE are read
   too: the ceiling the decoder sets (blur costs terrain detail before the UNet does anything).
3. Renders the 16-frame, 20-step morph with the engine (`Morpher`), times it, and checks its
   middle frames (t = 1/3 .. 2/3) against `scenes_morph.MORPH_CRITERIA`.

Run with `OMP_NUM_THREADS=1` on a shared machine; the morph's time is reported with the
thread count it ran on.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipelines.toy.scenes_data import HELD_OUT, TERRAIN_PHRASES, TERRAINS, TIME_NOUNS, TIME_SUFFIXES, TIMES
from pipelines.toy.scenes_draw import render_scene
from pipelines.toy.scenes_morph import GUIDANCE, SIDE, STEPS, check_morph
from pipelines.toy.scenes_measure import (
    KINDS, LandscapeReading, pixels_of, read_landscape, reference_scene, references,
)

BUNDLED = Path(__file__).parent / "scenes"

# The words for the sky, as thresholds on the readings (the generator's own skies:
# night brightness 26-33, noon blue minus red ~ 90 and brightness ~ 145, sunset warmth > 160).
NIGHT_DARK = 60.0  # night: sky brightness below this
NOON_BRIGHT, NOON_BLUE = 110.0, 50.0  # noon: brightness above, blue minus red above
SUNSET_WARM = 100.0  # sunset: warmest sky row, red minus blue, above this



def prompt(hour: str, terrain: str, seed: int = 0) -> str:
    """A training-style caption for a time of day and a terrain, without weather (so: a clear
    sky); the phrasing turns with the pair and the seed."""
    form = (TIMES.index(hour) + TERRAINS.index(terrain) + seed) % 3
    if form == 0:  # "a sunset over the ocean"
        return f"{TIME_NOUNS[hour][0]} over {TERRAIN_PHRASES[terrain][0]}"
    if form == 1:  # "the ocean at sunset"
        return f"{TERRAIN_PHRASES[terrain][0]} {TIME_SUFFIXES[hour][0]}"
    return f"{TIME_NOUNS[hour][1]} over {TERRAIN_PHRASES[terrain][1]}"  # "sunset over the sea"


def all_pairs(held_out: bool | None = None) -> list[tuple[str, str]]:
    """Every time x terrain pair; only the trained ones (False) or only the held-out ones (True)."""
    pairs = [(t, g) for t in TIMES for g in TERRAINS]
    return [p for p in pairs if held_out is None or (p in HELD_OUT) == held_out]


def quick_pairs() -> list[tuple[str, str]]:
    """The tests' trained pairs: time index + terrain index odd (25 pairs; each time 4-5 times,
    each terrain 3 times; "a sunset over the ocean" and "golden hour over hills" among them)."""
    return [(t, g) for t, g in all_pairs(held_out=False) if (TIMES.index(t) + TERRAINS.index(g)) % 2 == 1]


@dataclass(frozen=True)
class Trial:
    time: str
    terrain: str
    seed: int
    prompt: str
    reading: LandscapeReading
    image: Image.Image = field(repr=False, compare=False)

    @property
    def held_out(self) -> bool:
        return (self.time, self.terrain) in HELD_OUT

    @property
    def time_ok(self) -> bool:
        return self.reading.time == self.time

    @property
    def terrain_ok(self) -> bool:
        return self.reading.terrain == self.terrain

    @property
    def kind_ok(self) -> bool:
        return self.reading.kind == KINDS[self.terrain]

    @property
    def words_ok(self) -> bool | None:
        """The issue's words for this sky (night dark, noon blue and bright, sunset warm); None
        for the other times."""
        r = self.reading
        if self.time == "night":
            return r.brightness < NIGHT_DARK
        if self.time == "noon":
            return r.brightness > NOON_BRIGHT and r.sky_rgb[2] - r.sky_rgb[0] > NOON_BLUE
        if self.time == "sunset":
            return r.warmth > SUNSET_WARM
        return None


def load(folder: Path | str = BUNDLED):
    """The model as `pipelines.loading.LoadedModel` (CPU, fp32, progress bar off)."""
    from pipelines.loading import load_model

    return load_model(str(folder), device="cpu")


@torch.no_grad()
def run_trials(pipe, pairs: list[tuple[str, str]], seeds: list[int], batch: int = 8) -> list[Trial]:
    """Render every pair for every seed (one CPU generator per image) and read it."""
    refs = references()
    jobs = [(t, g, seed, prompt(t, g, seed)) for t, g in pairs for seed in seeds]
    trials = []
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        images = pipe(
            [text for *_, text in chunk], num_inference_steps=STEPS, guidance_scale=GUIDANCE,
            height=SIDE, width=SIDE, generator=[torch.Generator("cpu").manual_seed(seed) for _, _, seed, _ in chunk],
        ).images
        trials += [Trial(t, g, seed, text, read_landscape(image, refs), image)
                   for (t, g, seed, text), image in zip(chunk, images)]
    return trials


@torch.no_grad()
def vae_round_trips(pipe, pairs: list[tuple[str, str]], seeds: list[int], batch: int = 8) -> list[Trial]:
    """The generator's own drawings of the pairs, through the model's VAE and back (latent
    means), read like renders: what the decoder lets the model show at best."""
    vae = pipe.vae
    jobs = [(t, g, seed) for t, g in pairs for seed in seeds]
    trials = []
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        drawn = [render_scene(reference_scene(t, g, 7_000 + seed), SIDE) for t, g, seed in chunk]
        pixels = torch.from_numpy(np.stack([pixels_of(image) for image in drawn])).permute(0, 3, 1, 2)
        pixels = (pixels / 127.5 - 1).to(device=vae.device, dtype=vae.dtype)
        decoded = vae.decode(vae.encode(pixels).latent_dist.mode()).sample
        arrays = ((decoded.float().clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).cpu().numpy()
        images = [Image.fromarray(array.round().astype(np.uint8)) for array in arrays]
        trials += [Trial(t, g, seed, "(drawing)", read_landscape(image), image)
                   for (t, g, seed), image in zip(chunk, images)]
    return trials


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def rates(trials: list[Trial]) -> dict:
    """Shares right: time, terrain, terrain kind (`scenes_measure.KINDS`), time and terrain both; per time (time read right), per terrain (terrain read
    right); the issue's words (night dark, noon blue and bright, sunset warm)."""
    by_time, by_terrain = defaultdict(list), defaultdict(list)
    for trial in trials:
        by_time[trial.time].append(trial.time_ok)
        by_terrain[trial.terrain].append(trial.terrain_ok)
    words = [t.words_ok for t in trials if t.words_ok is not None]
    return {
        "renders": len(trials),
        "time": _mean(t.time_ok for t in trials),
        "terrain": _mean(t.terrain_ok for t in trials),
        "kind": _mean(t.kind_ok for t in trials),
        "both": _mean(t.time_ok and t.terrain_ok for t in trials),
        "words": _mean(words),
        "per_time": {name: _mean(v) for name, v in by_time.items()},
        "per_terrain": {name: _mean(v) for name, v in by_terrain.items()},
    }


def evaluate(model, seeds: list[int], quick: bool = False, morph: bool = True) -> dict:
    """Everything the report prints, as a dict (and the trials and morph check for pictures)."""
    pairs = quick_pairs() if quick else all_pairs(held_out=False)
    trained = run_trials(model.pipe, pairs, seeds)
    held_out = run_trials(model.pipe, all_pairs(held_out=True), seeds)
    report = {"model": model.name, "seeds": seeds, "steps": STEPS, "guidance": GUIDANCE,
              "trained": rates(trained), "held_out": rates(held_out),
              "held_out_readings": [{"prompt": t.prompt, "seed": t.seed, "time": t.reading.time,
                                     "terrain": t.reading.terrain} for t in held_out],
              "_trials": (trained, held_out)}
    # The same pairs drawn by the generator and passed through the model's VAE: the best the
    # decoder lets any render score (a low figure here is the VAE's, not the UNet's).
    round_trips = vae_round_trips(model.pipe, pairs + all_pairs(held_out=True), seeds)
    report["vae_round_trip"] = rates(round_trips)
    if morph:
        check = check_morph(model)
        report["morph"] = check.summary()
        report["_morph"] = check
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=BUNDLED, help="a diffusers folder (default: the bundled scenes)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds per pair (default 0 1 2; --quick: 0)")
    parser.add_argument("--quick", action="store_true", help="the tests' set: 25 trained + 4 held-out pairs")
    parser.add_argument("--no-morph", action="store_true", help="skip the sunset -> sunrise morph")
    parser.add_argument("--grid", type=Path, help="save a contact sheet (rows of renders, then the morph)")
    parser.add_argument("--json", type=Path, help="save the figures as JSON")
    parser.add_argument("--markdown", type=Path, help="save the figures as Markdown (for the model card)")
    args = parser.parse_args(argv)
    from pipelines.toy.scenes_report import contact_sheet, markdown, morph_lines, report_lines  # imports this module

    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    started = time.perf_counter()
    model = load(args.model)
    report = evaluate(model, seeds, quick=args.quick, morph=not args.no_morph)
    trained, held_out = report.pop("_trials")
    print(f"model {model.name}: {STEPS} steps, guidance {GUIDANCE}, seeds {seeds}")
    print("\n".join(report_lines(trained, held_out)))
    c = report["vae_round_trip"]
    print(f"ceiling, the generator's drawings of the same pairs through the model's VAE: {c['renders']} drawings: "
          f"time {c['time']:.1%}, terrain {c['terrain']:.1%} (kind {c['kind']:.1%}), both {c['both']:.1%}")
    check = report.pop("_morph", None)
    if check is not None:
        print("\n".join(morph_lines(check)))
    report["evaluation_seconds"] = round(time.perf_counter() - started, 1)
    print(f"evaluation took {report['evaluation_seconds']:.0f} s")
    if args.grid:
        images = [t.image for t in trained + held_out] + ([] if check is None else check.images)
        contact_sheet(images, columns=16 if check is not None else 9).save(args.grid)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(report))
    return report


if __name__ == "__main__":
    main()
