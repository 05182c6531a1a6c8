"""Command line: `python -m pipelines "a red circle" "a blue square" --frames 16 --out morph.gif`.

Exit code 0 on success; 2 with a one-line message on bad input or a model that
cannot be loaded. The progress bar goes to stderr; written paths go to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NoReturn, Sequence

from pipelines.loading import BUNDLED_MODELS
from pipelines.media import SUPPORTED_SUFFIXES, Film, check_suffix, format_for, write
from pipelines.request import MorphRequest, default_of, format_value, options, parse_option

DEFAULT_OUT = "morph.gif"


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad arguments in one line (scripts read the last line)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# How each kind of option is read from the command line: (argparse nargs, metavar).
_CLI_SHAPES = {"seeds": ("+", "S"), "scale": (2, ("S0", "S1")), "size": (None, "WxH"), "grid": (None, "RxC")}


def _argument_type(name: str):
    """An argparse `type` that parses one option's text form and reports errors in its terms."""

    def convert(text: str):
        try:
            return parse_option(name, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = name
    return convert


def add_request_options(parser: argparse.ArgumentParser) -> None:
    """One flag per field of MorphRequest, generated from its declaration (pipelines/request.py)."""
    for name, spec in options().items():
        flag = spec.flag or "--" + name.replace("_", "-")
        default = default_of(name)
        shown = format_value(default, spec.kind) if default is not None else "model's own" if name == "size" else "auto"
        help_text = f"{spec.help} ({shown})"
        if spec.kind == "flag":
            parser.add_argument(flag, dest=name, action="store_true", help=help_text)
        elif spec.kind == "choice":
            parser.add_argument(flag, dest=name, choices=spec.choices, default=default, help=help_text)
        elif spec.kind in ("seeds", "scale"):
            nargs, metavar = _CLI_SHAPES[spec.kind]
            item = int if spec.kind == "seeds" else float
            parser.add_argument(flag, dest=name, type=item, nargs=nargs, metavar=metavar, default=None,
                                help=help_text)
        else:
            metavar = _CLI_SHAPES.get(spec.kind, (None, None))[1]
            parser.add_argument(flag, dest=name, type=_argument_type(name), default=None, metavar=metavar,
                                help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments: the request's options, plus model, device, outputs and the safety checker."""
    parser = _OneLineParser(
        prog="python -m pipelines",
        description="Render a morph between prompts with a Stable Diffusion model: a chain A -> B -> ..., "
        "a grid among four prompts, or a direction A + s * (C - B).",
    )
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", help="the keyframes, in the walk's order")
    add_request_options(parser)
    parser.add_argument("--model", default=None, metavar="SPEC",
                        help=f"a bundled model ({', '.join(BUNDLED_MODELS)}), hub id, diffusers folder, "
                        ".safetensors file or tiny (default: the first bundled model this checkout has)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    parser.add_argument(
        "--out", action="append", default=None, metavar="PATH",
        help=f"output file, format from the suffix ({', '.join(SUPPORTED_SUFFIXES)}; .png is the strip, "
        f"or the mosaic of a grid); repeatable ({DEFAULT_OUT})",
    )
    parser.add_argument("--manifest", default=None, metavar="PATH", help="JSON manifest of the morph")
    parser.add_argument("--plot", default=None, metavar="PATH",
                        help="PNG of the path inspector: norms along the walk, gaps and cuts, a map of the space")
    parser.add_argument(
        "--keep-safety-checker",
        action="store_true",
        help="keep the model's safety checker; flagged frames are reported",
    )
    return parser


def request_from_args(args: argparse.Namespace) -> MorphRequest:
    """The MorphRequest the arguments describe: given options, declared defaults for the rest."""
    values = {name: getattr(args, name) for name in options() if getattr(args, name) is not None}
    for name in ("seeds", "scale"):
        if name in values:
            values[name] = tuple(values[name])
    return MorphRequest(prompts=tuple(args.prompts), **values)


def _quiet_libraries() -> None:
    """Silence library progress bars and chatter: this process's stderr is the user's progress bar."""
    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="huggingface_hub")


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    outputs = [Path(path) for path in (args.out or ([] if args.manifest or args.plot else [DEFAULT_OUT]))]
    # Everything that can be checked without a model is checked first: bad input costs nothing.
    from pipelines.keys import keys_for
    from pipelines.request import check_request
    from pipelines.walks import get_walk

    try:
        request = request_from_args(args)
        check_request(request)
        # pictures are read and checked now (their fit to the render size comes later)
        keys_for(request.prompts, request.seeds, request.size or (64, 64))
        walk = get_walk(request.walk)
        formats = [(path, format_for(path, walk.still)) for path in outputs]
    except ValueError as error:
        return _fail(str(error))

    from tqdm import tqdm

    from pipelines.cache import default_frame_cache
    from pipelines.engine import Morpher
    from pipelines.loading import ModelLoadError, load_model

    try:
        model = load_model(args.model, device=args.device, keep_safety_checker=args.keep_safety_checker)
    except ModelLoadError as error:
        return _fail(str(error))

    started = time.perf_counter()
    with tqdm(total=None, unit="step", desc="morph", file=sys.stderr) as bar:

        def on_step(progress) -> None:
            bar.total = progress.frames_total * progress.steps_total
            bar.n = progress.frames_done * progress.steps_total + progress.step * progress.batch_frames
            bar.set_postfix_str(f"frame {progress.frames_done}/{progress.frames_total}", refresh=False)
            bar.refresh()

        # Frames are cached on disk: a repeated or re-timed morph renders only what is new.
        result = Morpher(model, cache=default_frame_cache()).render(request, on_step=on_step)
    manifest = {**result.manifest, "outputs": [str(path) for path in outputs]}
    film = film_of(result, manifest)
    try:
        for path, fmt in formats:
            print(write(film, path, fmt))
        if args.manifest:
            print(write(film, args.manifest, "manifest"))
        if args.plot:
            print(write(film, args.plot, "plot"))
    except OSError as error:
        return _fail(f"could not write output: {error}", code=1)
    flagged = result.manifest["nsfw_frames"]
    if flagged:
        print(f"warning: the safety checker flagged frames {flagged} (blacked out)", file=sys.stderr)
    cost = result.manifest.get("render") or {}
    reused = f", {cost['cache_hits']} from the frame cache" if cost.get("cache_hits") else ""
    print(f"{len(film.images)} frames in {time.perf_counter() - started:.1f} s with model {model.name}{reused}",
          file=sys.stderr)
    return 0


def film_of(result, manifest: dict) -> Film:
    """The frames of a finished morph as the media writers take them (a grid's tiles placed)."""
    frames = result.frames
    tiles = None
    if frames and frames[0].point.get("row") is not None:
        tiles = [(int(frame.point["row"]), int(frame.point["column"])) for frame in frames]
    return Film([frame.image for frame in frames], fps=manifest["fps"], loop=True, tiles=tiles, manifest=manifest)


if __name__ == "__main__":
    sys.exit(main())
