"""The manifest: the JSON-ready record of a morph (what was asked, what was rendered, how smooth it is).

Every walk writes the same record: the keys, each frame's point on the walk (its
coordinates and caption), the render settings, timings, the frame cache's share
and the smoothness figures. Walk-specific extras (a chain's from/to, a direction's
embedding norms) come from small helpers here.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any


from pipelines import metrics
from pipelines.render import default_batch_size
from pipelines.inspect import path_record
from pipelines.walks import Key, get_walk

if TYPE_CHECKING:
    from pipelines.keys import EncodedKey
    from pipelines.loading import LoadedModel
    from pipelines.render import RenderedFrame
    from pipelines.request import MorphRequest
    from pipelines.spacing import RenderStats

MANIFEST_VERSION = 2
# A picture key's frame within this many dB of the VAE round trip is reconstructed as well as the model can.
RECONSTRUCTION_TOLERANCE_DB = 2.0


def build(
    model: "LoadedModel",
    request: "MorphRequest",
    frames: list["RenderedFrame"],
    timings: dict[str, float],
    stats: "RenderStats | None",
    encoded: list["EncodedKey"],
    keys: list,
) -> dict:
    """The manifest of a finished (resolved) request."""
    pipe = model.pipe
    walk = get_walk(request.walk)
    record: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "walk": walk.name,
        "prompts": list(request.prompts),
        "negative_prompt": request.negative_prompt,
        "seeds": [key.seed for key in keys],
        "keys": [key.describe() for key in keys],
        "frames": [_frame_record(frame, request) for frame in frames],
        "model": model.name,
        "pipeline": type(pipe).__name__,
        "scheduler": type(pipe.scheduler).__name__,
        "device": str(model.device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "steps": request.steps,
        "guidance": request.guidance,
        "size": list(request.size),
        "interp": request.interp,
        "noise_interp": request.noise_interp,
        "spacing": request.spacing,
        "speed": request.speed,
        "loop": request.loop,
        "fps": request.fps,
        "batch_size": request.batch_size or default_batch_size(model.device, request.width, request.height),
        "nsfw_frames": [frame.index for frame in frames if frame.nsfw],
        "timings": {
            **{name: round(value, 4) for name, value in timings.items()},
            "per_frame_s": round(timings.get("render_s", 0.0) / max(1, len(frames)), 4),
        },
        "metrics": _smoothness(frames, request) if len(frames) >= 2 else None,
        # Endpoint fidelity, cheaply: a digest of each keyframe's pixels, to compare with a
        # plain render of its prompt and seed (the benchmark measures PSNR against one).
        "keyframes": _keyframes(frames, request, keys),
        "path": path_record(request, frames, encoded, keys, pipe, model.name) if frames else None,
        "render": stats.as_dict() if stats is not None else None,
        "request": asdict(request),
    }
    if walk.name in ("chain", "direction"):
        record["t"] = [round(frame.segment + frame.t, 6) for frame in frames]
    if walk.name == "grid":
        record["grid"] = {"rows": request.grid[0], "columns": request.grid[1], "order": "serpentine"}
    return record


def _frame_record(frame: "RenderedFrame", request: "MorphRequest") -> dict:
    record = {"index": frame.index, **frame.point.as_dict(), "caption": frame.caption, "nsfw": frame.nsfw}
    if request.walk == "chain":
        record["from"] = int(frame.point["segment"])
        record["to"] = (int(frame.point["segment"]) + 1) % len(request.prompts)
    return record


def _smoothness(frames: list["RenderedFrame"], request: "MorphRequest") -> dict:
    """Gaps and jump figures along the output order (a grid's serpentine path included)."""
    keyframes = None
    if request.walk == "chain":
        keyframes = [i for i, frame in enumerate(frames) if frame.t == 0.0]
        keyframes += [len(frames) - 1] if frames[-1].t == 1.0 else []
    return metrics.smoothness([frame.image for frame in frames], keyframes=keyframes, loop=request.loop)


def _keyframes(frames: list["RenderedFrame"], request: "MorphRequest", keys: list) -> list[dict]:
    """The frames that show one key alone, with their pixel digest."""
    walk = get_walk(request.walk)
    found = []
    for frame in frames:
        recipe = walk.recipe(frame.point, request)
        if isinstance(recipe, Key):
            key = keys[recipe.index]
            found.append({"index": frame.index, "key": recipe.index, "prompt": key.prompt, "seed": key.seed,
                          "sha256_16": metrics.pixel_digest(frame.image)})
    return found


def add_reconstruction(record: dict, pipe: Any, keys: list, frames: list["RenderedFrame"], walk: Any,
                       request: "MorphRequest") -> None:
    """For each picture key shown alone: how close its frame is to the picture, and to the VAE's best.

    The VAE round trip (encode, decode) is the most any inversion can give back; a
    frame within RECONSTRUCTION_TOLERANCE_DB of it is as good as this model allows.
    """
    from pipelines.inversion import decode_latent, encode_picture

    for entry in record["keyframes"]:
        key = keys[entry["key"]]
        picture = getattr(key, "picture", None)
        if picture is None:
            continue
        frame = frames[entry["index"]]
        round_trip = decode_latent(pipe, encode_picture(pipe, picture.image))
        vs_input, vs_vae = metrics.psnr(frame.image, picture.image), metrics.psnr(frame.image, round_trip)
        best = metrics.psnr(round_trip, picture.image)
        figures = {"psnr_vs_input_db": _db(vs_input), "psnr_vs_vae_round_trip_db": _db(vs_vae),
                   "vae_round_trip_psnr_db": _db(best),
                   "within_tolerance": bool(vs_input >= best - RECONSTRUCTION_TOLERANCE_DB)}
        entry["reconstruction"] = figures
        record["keys"][entry["key"]]["reconstruction"] = figures


def _db(value: float) -> float | None:
    return None if value != value else (999.0 if value == float("inf") else round(value, 2))
