"""Command line: `python -m pipelines "a red circle" "a blue square" --frames 16 --out morph.gif`.

Exit code 0 on success; 2 with a one-line message on bad input, an output that
cannot be written or a model that cannot be loaded. Every option is checked against
the limits the service applies (`pipelines.limits.Limits`, raised with the flags of
the same names, e.g. `--max-frames`) before the model loads. The outputs are written
all at once at the end, or none of them. The progress bar goes to stderr; written
paths go to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pipelines.limits import (
    Limits,
    device_limits,
    check_option,
    check_prompts,
    limit_flag,
    request_limits,
)
from pipelines import threads
from pipelines.lanes import add_lanes_flag
from pipelines.compiling import add_compile_flag
from pipelines.loading import BUNDLED_MODELS
from pipelines.media import (
    SUPPORTED_SUFFIXES,
    Film,
    Format,
    check_output_path,
    format_for,
    shown_path,
    write_all,
)
from pipelines.request import MorphRequest, default_of, format_value, options, shown

DEFAULT_OUT = "morph.gif"
MESSAGE_CHARS = 300  # argparse's other messages (unrecognized arguments) quote what was typed; a long one is cut


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad arguments in one short line (scripts read the last line)."""

    def _check_value(self, action: argparse.Action, value: object) -> None:
        # argparse's own check quotes a bad choice whole; this one echoes a short prefix
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise argparse.ArgumentError(action, f"invalid choice: {shown(value)} (choose from {choices})")

    def error(self, message: str) -> NoReturn:
        if len(message) > MESSAGE_CHARS:
            message = shown(message, MESSAGE_CHARS)
        self.exit(2, f"{self.prog}: error: {message}\n")


# How each kind of option is read from the command line: (argparse nargs, metavar).
_CLI_SHAPES = {"seeds": ("+", "S"), "scale": (2, ("S0", "S1")), "size": (None, "WxH"), "grid": (None, "RxC")}


def add_request_options(parser: argparse.ArgumentParser) -> None:
    """One flag per field of MorphRequest, generated from its declaration (pipelines/request.py).

    Values are kept as typed: `request_from_args` converts and checks them against the limits.
    """
    defaults, on_cpu = Limits(), device_limits("cpu")
    for name, spec in options().items():
        flag = spec.flag or "--" + name.replace("_", "-")
        default = default_of(name)
        usual = format_value(default, spec.kind) if default is not None else "model's own" if name == "size" else "auto"
        cap = ""
        if spec.limit:
            most, cpu_most = getattr(defaults, spec.limit), getattr(on_cpu, spec.limit)
            cpu_note = f", {cpu_most:g} on a CPU" if cpu_most != most else ""
            cap = f"; at most {most:g}{cpu_note} unless {limit_flag(spec.limit)}"
        help_text = f"{spec.help} ({usual}{cap})"
        if spec.kind == "flag":
            parser.add_argument(flag, dest=name, action="store_true", help=help_text)
        elif spec.kind == "choice":
            parser.add_argument(flag, dest=name, choices=spec.choices, default=default, help=help_text)
        else:
            nargs, metavar = _CLI_SHAPES.get(spec.kind, (None, None))
            parser.add_argument(flag, dest=name, nargs=nargs, metavar=metavar, default=None, help=help_text)


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """One flag per request limit, named as the service's launch flags (the messages name them)."""
    group = parser.add_argument_group("limits", "the service's limits, which the CLI applies too; raise them here")
    for item in request_limits():
        group.add_argument(limit_flag(item.name), dest=item.name, type=type(item.default), default=None,
                           metavar="N", help=f"{item.metadata['help']} ({item.default:g})")


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments: the request's options, plus model, device, outputs and the safety checker."""
    parser = _OneLineParser(
        prog="python -m pipelines",
        description="Render a morph between prompts with a Stable Diffusion model: a chain A -> B -> ..., "
        "a grid among four prompts, or a direction A + s * (C - B).",
    )
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", help="the keyframes, in the walk's order")
    add_request_options(parser)
    add_limit_options(parser)
    parser.add_argument("--model", default=None, metavar="SPEC",
                        help=f"a bundled model ({', '.join(BUNDLED_MODELS)}), hub id, diffusers folder, "
                        ".safetensors file or tiny (default: the first bundled model this checkout has)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    threads.add_threads_flag(parser)
    add_compile_flag(parser)
    add_lanes_flag(parser)
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


def limits_from_args(args: argparse.Namespace) -> Limits:
    """The service's default limits for the device (smaller on a CPU), with those given on the command line instead."""
    given = {item.name: getattr(args, item.name) for item in request_limits() if getattr(args, item.name) is not None}
    return replace(device_limits(args.device), **given)


def request_from_args(args: argparse.Namespace, limits: Limits | None = None) -> MorphRequest:
    """The MorphRequest the arguments describe, each given option checked against `limits` (LimitError)."""
    from pipelines.walks import get_walk

    limits = limits or Limits()
    prompts = tuple(args.prompts)
    # several words (--seed 1 2, --scale 0 1) are checked as one text, as the service's form sends them
    given = {name: getattr(args, name) for name in options() if getattr(args, name) is not None}
    values = {name: check_option(name, " ".join(value) if isinstance(value, list) else value, limits, len(prompts))
              for name, value in given.items()}
    check_prompts(prompts, get_walk(values.get("walk", "chain")).more_keys, limits)
    return MorphRequest(prompts=prompts, **values)


def output_targets(args: argparse.Namespace, still: str) -> list[tuple[Path, Format | str]]:
    """Every file to write, with its format: each checked writable now, before any work (ValueError)."""
    outputs = args.out or ([] if args.manifest or args.plot else [DEFAULT_OUT])
    targets: list[tuple[Path, Format | str]] = [(Path(path), format_for(path, still)) for path in outputs]
    targets += [(Path(path), name) for path, name in ((args.manifest, "manifest"), (args.plot, "plot")) if path]
    seen: set[str] = set()
    for path, _ in targets:
        check_output_path(path)
        if os.path.abspath(path) in seen:  # the second would overwrite the first
            raise ValueError(f"output {shown_path(path)} is given twice")
        seen.add(os.path.abspath(path))
    return targets


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


def checked_inputs(args: argparse.Namespace) -> tuple[MorphRequest, Limits, list[tuple[Path, Format | str]]]:
    """(request, limits, outputs): everything that can be checked without a model (ValueError on the first fault)."""
    from pipelines.keys import keys_for
    from pipelines.request import check_request
    from pipelines.walks import get_walk

    limits = limits_from_args(args)
    request = request_from_args(args, limits)
    check_request(request)
    # pictures are read and checked now (their fit to the render size comes later)
    keys_for(request.prompts, request.seeds, request.size or (64, 64))
    return request, limits, output_targets(args, get_walk(request.walk).still)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = build_parser().parse_args(argv)
    # 1. everything that can be checked without a model is checked first: bad input costs nothing
    #    (not even the import of diffusers, which takes seconds)
    try:
        request, limits, targets = checked_inputs(args)
    except ValueError as error:
        return _fail(str(error))
    _quiet_libraries()

    governor = threads.configure(args.threads)  # before torch runs anything
    from tqdm import tqdm

    from pipelines.cache import default_frame_cache
    from pipelines.engine import Morpher
    from pipelines.limits import check_pixels
    from pipelines.loading import ModelLoadError, load_model
    from pipelines.speed import SpeedSettings

    # 2. the model, then its own size (when none was asked for) against the same limit
    try:
        model = load_model(args.model, device=args.device, keep_safety_checker=args.keep_safety_checker)
    except ModelLoadError as error:
        return _fail(str(error))
    except OSError as error:  # e.g. a --model name too long for the file system
        return _fail(f"model {shown_path(args.model)}: {error.strerror}")
    # a repeated or re-timed morph renders only what is new (the frame cache)
    morpher = Morpher(model, cache=default_frame_cache(), speed=SpeedSettings.for_device(model.device, args.compile, args.lanes))
    try:
        resolved = morpher.resolve(request)  # only checked: the manifest keeps the size as asked (None)
        check_pixels(resolved.width, resolved.height, limits)
    except ValueError as error:
        return _fail(str(error))
    # compile only when this render pays the compile back (pipelines/speed.py)
    if morpher.accelerator.wanted_for(resolved):
        morpher.accelerator.prepare()
    morpher.accelerator.start_lanes()  # when asked for (--lanes): beside the render, used once ready

    # 3. render
    started = time.perf_counter()
    with tqdm(total=None, unit="step", desc="morph", file=sys.stderr) as bar:

        def on_step(progress) -> None:
            bar.total = progress.frames_total * progress.steps_total
            bar.n = progress.frames_done * progress.steps_total + progress.step * progress.batch_frames
            bar.set_postfix_str(f"frame {progress.frames_done}/{progress.frames_total}", refresh=False)
            bar.refresh()

        result = morpher.render(request, on_step=on_step)

    # 4. write every output, or none of them
    outputs = [str(path) for path, fmt in targets if fmt not in ("manifest", "plot")]
    film = film_of(result, {**result.manifest, "outputs": outputs})
    try:
        for path in write_all(film, targets):
            print(path)
    except OSError as error:
        return _fail(f"could not write the outputs, so none was written: {error}", code=1)
    flagged = result.manifest["nsfw_frames"]
    if flagged:
        print(f"warning: the safety checker flagged frames {flagged} (blacked out)", file=sys.stderr)
    cost = result.manifest.get("render") or {}
    reused = f", {cost['cache_hits']} from the frame cache" if cost.get("cache_hits") else ""
    used = f", CPU threads: {governor.current} ({'fixed' if governor.fixed else 'auto'})" \
        if model.device.type == "cpu" and governor.current else ""
    accelerated = morpher.accelerator.compiled is not None or morpher.accelerator.lanes is not None
    unet = f", {morpher.accelerator.describe()}" if accelerated else ""
    print(f"{len(film.images)} frames in {time.perf_counter() - started:.1f} s with model {model.name}{reused}{used}{unet}",
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
