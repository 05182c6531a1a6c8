"""The inputs of each endpoint, generated from the request's declaration, and their checks.

An endpoint serves one walk. Its inputs are the walk's key slots (`prompt_a`, ...,
plus `more_prompts` for a chain), then every request option the walk reads and the
service offers (`Option.api`), in declaration order, then `model`. The page's
widgets, the API's parameter names and defaults, and `check_form` all read
`inputs_for(walk)`: a new option in `pipelines/request.py` shows up everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.keys import IMAGE_PREFIX, is_image_spec
from pipelines.pictures import MAX_PICTURE_BYTES, PictureError, read_picture
from pipelines.request import MorphRequest, Option, default_of, format_value, options, walk_reads
from pipelines.walks import Walk, get_walk
from pipelines.limits import check_option
from service.limits import LimitError, Limits, _choice, _text

MORE_PROMPTS = "more_prompts"


@dataclass(frozen=True)
class Input:
    """One parameter of an endpoint: a key slot, the chain's extra prompts, an option, or the model."""

    name: str
    label: str
    default: Any
    option: Option | None = None  # None for prompts, pictures and the model
    picture_of: str | None = None  # a key slot's picture: the slot it belongs to


def picture_name(slot: str) -> str:
    """The picture input of a key slot: prompt_a -> image_a."""
    return slot.replace("prompt_", "image_")


def inputs_for(walk: Walk | str, default_size: str = "") -> list[Input]:
    """The parameters of the endpoint that serves `walk`, in order."""
    walk = get_walk(walk) if isinstance(walk, str) else walk
    inputs = [Input(slot.name, slot.label, "") for slot in walk.slots]
    if walk.more_keys:
        inputs.append(Input(MORE_PROMPTS, "More prompts", ""))
    offered = [(name, spec) for name, spec in options().items() if spec.api and walk_reads(walk.name, name)]
    for name, spec in offered:
        if not spec.appended:
            default = default_size if name == "size" else format_value(default_of(name), spec.kind)
            inputs.append(Input(name, spec.label, default, spec))
    inputs.append(Input("model", "Model", None))
    # options added later come after `model`, so older clients' positional arguments still line up
    inputs += [Input(name, spec.label, format_value(default_of(name), spec.kind), spec)
               for name, spec in offered if spec.appended]
    # pictures come last, so the positional order of older parameters never changes
    inputs += [Input(picture_name(slot.name), slot.label.replace("Prompt", "Picture"), None, picture_of=slot.name)
               for slot in picture_slots(walk)]
    return inputs


def picture_slots(walk: Walk) -> tuple:
    """The key slots a picture may fill: those whose key is shown as a frame.

    A direction renders A + s (C - B) on A's noise: B and C steer by their prompts
    only, so a picture there would be inverted for nothing and never seen.
    """
    return walk.slots[:1] if walk.name == "direction" else walk.slots


@dataclass(frozen=True)
class CheckedForm:
    """A request the service accepts, and the model it runs on."""

    request: MorphRequest
    model: str


def check_form(limits: Limits, models: list[str] | tuple[str, ...], walk: str = "chain",
               uploads: Path | None = None, **values: Any) -> CheckedForm:
    """Check every value of one request against `limits`; raise LimitError on the first bad one.

    `values` are keyword arguments named as `inputs_for(walk)` names them; missing
    ones take their defaults. `models` is the allow-list configured at launch;
    `model=None` picks the first. A key slot's picture (`image_a`, ...) must be a file
    inside `uploads` (Gradio's upload folder): the service never reads a path a visitor
    typed. Cheap and side-effect free: it runs before any model work.
    """
    chosen = get_walk(walk)
    known = {item.name for item in inputs_for(chosen)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise LimitError(f"unknown parameter {unknown[0]!r} for the {chosen.name} walk.")
    prompts = _prompts(chosen, values, limits, uploads)
    fields: dict[str, Any] = {"walk": chosen.name}
    for name, spec in options().items():
        if spec.api and walk_reads(chosen.name, name) and name in values:
            fields[name] = check_option(name, values[name], limits, len(prompts))  # as the CLI checks it
    # a chain shows every prompt as a keyframe; a direction's B and C only steer, never appear
    if chosen.more_keys and "frames" in fields and fields["frames"] < len(prompts):
        raise LimitError(f"frames must be at least the number of prompts ({len(prompts)}); got {fields['frames']}.")
    if not models:
        raise LimitError("No model is configured on this server.")
    model = values.get("model")
    model = models[0] if model in (None, "") else _choice("model", model, list(models))
    try:
        request = MorphRequest(prompts=tuple(prompts), **fields)
        from pipelines.request import check_request

        check_request(request)
    except LimitError:
        raise
    except ValueError as error:
        raise LimitError(str(error)) from None
    return CheckedForm(request, model)


def _prompts(walk: Walk, values: dict[str, Any], limits: Limits, uploads: Path | None) -> list[str]:
    """The keys as the engine takes them: prompts, or `image:PATH|prompt` for an uploaded picture."""
    raw = [values.get(slot.name) for slot in walk.slots]
    pictures = [values.get(picture_name(slot.name)) for slot in walk.slots]
    if walk.more_keys:
        extra = _more_prompts(values.get(MORE_PROMPTS, ""))
        raw, pictures = raw + extra, pictures + [None] * len(extra)
    if walk.more_keys and len(raw) > limits.max_prompts:  # other walks take a fixed number of prompts
        raise LimitError(f"A chain has at most {limits.max_prompts} prompts (--max-prompts); got {len(raw)}.")
    keys = []
    for index, (item, picture) in enumerate(zip(raw, pictures)):
        name = f"prompt {chr(ord('A') + index)}"
        text = _text(name, item, limits.max_prompt_chars)
        if is_image_spec(text):
            raise LimitError(f"{name}: pictures are uploaded, not typed as image:PATH.")
        path = _uploaded(picture, f"picture {chr(ord('A') + index)}", uploads)
        if path is not None:
            keys.append(f"{IMAGE_PREFIX}{path}|{text}")  # the prompt, if any, describes the picture
        elif text:
            keys.append(text)
        elif index < len(picture_slots(walk)):
            raise LimitError(f"{name} is empty: every keyframe of the {walk.name} walk needs a prompt or a picture.")
        else:  # a slot that takes no picture (a direction's B and C, a chain's extra prompts)
            raise LimitError(f"{name} is empty: every prompt of the {walk.name} walk needs some text.")
    return keys


def _uploaded(value: Any, name: str, uploads: Path | None) -> str | None:
    """The path of an uploaded picture (a Gradio file payload or its path), checked; None when absent."""
    if value in (None, ""):
        return None
    path = value.get("path") if isinstance(value, dict) else value
    if not isinstance(path, str) or not path:
        raise LimitError(f"{name} must be an uploaded picture file; got {type(value).__name__}.")
    resolved = Path(path).resolve()
    if uploads is None or not resolved.is_relative_to(Path(uploads).resolve()):
        raise LimitError(f"{name}: only pictures uploaded to this server are read.")
    if "|" in str(resolved):  # the engine's key reads up to the first '|' as the path
        raise LimitError(f"{name}: the file name may not contain '|'; rename the file.")
    try:
        read_picture(resolved, (64, 64), max_bytes=MAX_PICTURE_BYTES)
    except PictureError as error:
        raise LimitError(f"{name}: {error}.") from None
    return str(resolved)



def _more_prompts(value: Any) -> list[Any]:
    """The chain's extra prompts: one per line (blank lines ignored), or a list."""
    if isinstance(value, str):
        return [line for line in value.splitlines() if line.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    if value is None:
        return []
    raise LimitError(f"more_prompts must be text with one prompt per line; got {type(value).__name__}.")


def values_from_manifest(record: Any) -> tuple[str, dict[str, Any]]:
    """(walk, endpoint values) that render again what a manifest describes (for `/inspect`).

    The values go through `check_form` like any visitor's: limits apply, and a picture
    key's path is accepted only if it is still in the upload folder.
    """
    if not isinstance(record, dict) or not isinstance(record.get("request"), dict):
        raise LimitError("manifest must be the JSON manifest a morph returned (it has a 'request').")
    request = record["request"]
    walk = get_walk(str(request.get("walk", "chain")))
    prompts = request.get("prompts")
    if not isinstance(prompts, list) or not all(isinstance(prompt, str) for prompt in prompts):
        raise LimitError("manifest: request.prompts must be a list of prompts.")
    values: dict[str, Any] = {}
    slots = [slot.name for slot in walk.slots]
    extra = []
    for index, spec in enumerate(prompts):
        if index >= len(slots):
            extra.append(spec)
            continue
        if is_image_spec(spec):
            path, _, text = spec[len(IMAGE_PREFIX):].partition("|")
            values[slots[index]], values[picture_name(slots[index])] = text, path
        else:
            values[slots[index]] = spec
    if extra:
        values[MORE_PROMPTS] = "\n".join(extra)
    for item in inputs_for(walk):
        if item.option is not None and item.name in request:
            value = request[item.name]
            values[item.name] = format_value(value, item.option.kind)
    if isinstance(record.get("model"), str):
        values["model"] = record["model"]
    return walk.name, values
