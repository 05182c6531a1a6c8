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

from pipelines.interpolate import SPACINGS
from pipelines.media import SUPPORTED_SUFFIXES, check_suffix

DEFAULT_OUT = "morph.gif"


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad arguments in one line (scripts read the last line)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H), both positive multiples of 8."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 64x64, got {text!r}") from None
    if width < 8 or height < 8 or width % 8 or height % 8:
        raise argparse.ArgumentTypeError(f"width and height must be positive multiples of 8, got {text!r}")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments (the contract in DESIGN.md, plus --fps and --keep-safety-checker)."""
    parser = _OneLineParser(
        prog="python -m pipelines",
        description="Render a morph between two or more prompts with a Stable Diffusion model.",
    )
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", help="two or more prompts, morphed in order")
    parser.add_argument("--frames", type=int, default=16, help="total frames, keyframes included once (16)")
    parser.add_argument("--seed", type=int, nargs="+", default=[0], metavar="S", help="one seed, or one per prompt")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per frame (20)")
    parser.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale (5.0)")
    parser.add_argument("--size", type=parse_size, default=(64, 64), metavar="WxH", help="multiples of 8 (64x64)")
    parser.add_argument("--negative", default="", metavar="TEXT", help="negative prompt")
    parser.add_argument("--interp", choices=("slerp", "lerp"), default="slerp", help="for the prompt embeddings")
    parser.add_argument("--spacing", choices=SPACINGS, default="linear", help="how t is placed between keyframes")
    parser.add_argument("--loop", action="store_true", help="go back to the first prompt at the end")
    parser.add_argument("--model", default=None, metavar="SPEC", help="hub id, diffusers folder or .safetensors")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    parser.add_argument("--batch-size", type=int, default=None, metavar="B", help="frames per batch")
    parser.add_argument(
        "--out", action="append", default=None, metavar="PATH",
        help=f"output file, format from the suffix ({', '.join(SUPPORTED_SUFFIXES)}); repeatable ({DEFAULT_OUT})",
    )
    parser.add_argument("--manifest", default=None, metavar="PATH", help="JSON manifest of the morph")
    parser.add_argument("--fps", type=float, default=8.0, help="frames per second of GIF, WebP and MP4 (8)")
    parser.add_argument(
        "--keep-safety-checker",
        action="store_true",
        help="keep the model's safety checker; flagged frames are reported",
    )
    return parser


def request_from_args(args: argparse.Namespace):
    """The MorphRequest the arguments describe (checked by the caller)."""
    from pipelines.morph import MorphRequest

    width, height = args.size
    return MorphRequest(
        prompts=tuple(args.prompts),
        seeds=tuple(args.seed),
        frames=args.frames,
        steps=args.steps,
        guidance=args.guidance,
        width=width,
        height=height,
        negative_prompt=args.negative,
        interp=args.interp,
        spacing=args.spacing,
        loop=args.loop,
        batch_size=args.batch_size,
    )


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
    outputs = [Path(path) for path in (args.out or ([] if args.manifest else [DEFAULT_OUT]))]
    # Everything that can be checked without a model is checked first: bad input costs nothing.
    from pipelines.morph import check_request

    request = request_from_args(args)
    try:
        check_request(request)
        for path in outputs:
            check_suffix(path)
    except ValueError as error:
        return _fail(str(error))

    from tqdm import tqdm

    from pipelines.cache import default_frame_cache
    from pipelines.loading import ModelLoadError, load_model
    from pipelines.media import write_manifest, write_media
    from pipelines.morph import Morpher

    try:
        model = load_model(args.model, device=args.device, keep_safety_checker=args.keep_safety_checker)
    except ModelLoadError as error:
        return _fail(str(error))

    started = time.perf_counter()
    with tqdm(total=request.frames * request.steps, unit="step", desc="morph", file=sys.stderr) as bar:

        def on_step(progress) -> None:
            bar.total = progress.frames_total * progress.steps_total
            bar.n = progress.frames_done * progress.steps_total + progress.step * progress.batch_frames
            bar.set_postfix_str(f"frame {progress.frames_done}/{progress.frames_total}", refresh=False)
            bar.refresh()

        # Frames are cached on disk: a repeated or re-timed morph renders only what is new.
        result = Morpher(model, cache=default_frame_cache()).render(request, on_step=on_step)
    images = [frame.image for frame in result.frames]
    try:
        for path in outputs:
            print(write_media(images, path, fps=args.fps, loop=True))
        if args.manifest:
            manifest = {**result.manifest, "outputs": [str(path) for path in outputs]}
            print(write_manifest(manifest, Path(args.manifest)))
    except OSError as error:
        return _fail(f"could not write output: {error}", code=1)
    flagged = result.manifest["nsfw_frames"]
    if flagged:
        print(f"warning: the safety checker flagged frames {flagged} (blacked out)", file=sys.stderr)
    cost = result.manifest.get("render") or {}
    reused = f", {cost['cache_hits']} from the frame cache" if cost.get("cache_hits") else ""
    print(f"{len(images)} frames in {time.perf_counter() - started:.1f} s with model {model.name}{reused}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
