"""Score the bundled model: does each prompt come out in the right colour and shape?

    python -m pipelines.toy.evaluate [--model FOLDER] [--seeds 0 1 2] [--grid grid.png]

Renders "a large {colour} {shape}" for every colour and shape over several seeds with the
plain diffusers pipeline, reads each render with `pipelines.toy.measure`, and prints the
rates per colour, per shape and for the held-out (never trained) colour-shape pairs.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from pipelines.toy.dataset import COLOURS, HELD_OUT, SHAPES
from pipelines.toy.measure import ShapeReading, read_scene

BUNDLED = Path(__file__).parent / "shapes64"
STEPS, GUIDANCE = 20, 5.0


@dataclass(frozen=True)
class Trial:
    colour: str
    shape: str
    seed: int
    reading: ShapeReading
    image: Image.Image

    @property
    def colour_ok(self) -> bool:
        return self.reading.colour == self.colour

    @property
    def shape_ok(self) -> bool:
        return self.reading.shape == self.shape


def load_bundled(folder: Path = BUNDLED) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def run_trials(pipe: StableDiffusionPipeline, pairs: list[tuple[str, str]], seeds: list[int],
               batch: int = 16) -> list[Trial]:
    """Render every (colour, shape) pair for every seed; one generator per image."""
    jobs = [(colour, shape, seed) for colour, shape in pairs for seed in seeds]
    trials = []
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        images = pipe(
            [f"a large {colour} {shape}" for colour, shape, _ in chunk],
            num_inference_steps=STEPS, guidance_scale=GUIDANCE, height=64, width=64,
            generator=[torch.Generator("cpu").manual_seed(seed) for _, _, seed in chunk],
        ).images
        trials += [Trial(c, s, seed, read_scene(image), image) for (c, s, seed), image in zip(chunk, images)]
    return trials


def all_pairs(include_held_out: bool = False) -> list[tuple[str, str]]:
    return [(c, s) for c in COLOURS for s in SHAPES if include_held_out or (c, s) not in HELD_OUT]


def rates(trials: list[Trial]) -> dict[str, dict[str, float]]:
    """Fraction correct per colour (colour reading) and per shape (shape reading)."""
    by_colour, by_shape = defaultdict(list), defaultdict(list)
    for trial in trials:
        by_colour[trial.colour].append(trial.colour_ok)
        by_shape[trial.shape].append(trial.shape_ok)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return {
        "colour": {name: mean(v) for name, v in by_colour.items()},
        "shape": {name: mean(v) for name, v in by_shape.items()},
        "colour_overall": mean([t.colour_ok for t in trials]),
        "shape_overall": mean([t.shape_ok for t in trials]),
    }


def contact_sheet(trials: list[Trial], columns: int) -> Image.Image:
    sheet = Image.new("RGB", (64 * columns, 64 * ((len(trials) + columns - 1) // columns)))
    for i, trial in enumerate(trials):
        sheet.paste(trial.image, (64 * (i % columns), 64 * (i // columns)))
    return sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=BUNDLED)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--grid", type=Path, help="save a contact sheet of the trained pairs")
    args = parser.parse_args(argv)
    pipe = load_bundled(args.model)
    trained = run_trials(pipe, all_pairs(), args.seeds)
    held_out = run_trials(pipe, sorted(HELD_OUT), args.seeds)
    report = rates(trained)
    print(f"trained pairs: {len(trained)} renders, {len(args.seeds)} seeds, {STEPS} steps, guidance {GUIDANCE}")
    print("colour " + "  ".join(f"{k} {v:.0%}" for k, v in report["colour"].items()))
    print("shape  " + "  ".join(f"{k} {v:.0%}" for k, v in report["shape"].items()))
    print(f"overall: colour {report['colour_overall']:.1%}, shape {report['shape_overall']:.1%}")
    held = rates(held_out)
    print(f"held-out pairs {sorted(HELD_OUT)}: colour {held['colour_overall']:.0%}, shape {held['shape_overall']:.0%}")
    if args.grid:
        contact_sheet(trained + held_out, columns=4 * len(args.seeds)).save(args.grid)


if __name__ == "__main__":
    main()
