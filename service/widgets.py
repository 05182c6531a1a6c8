"""The page's widgets, generated from an endpoint's inputs (`service.form.inputs_for`).

Each kind of request option has one widget recipe here; which options a tab shows,
their labels, defaults and help come from `pipelines/request.py`, their ranges from
the launch limits. Layout only: no checks (the runner does them for page and API alike).
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from pipelines.request import SEED_MAX
from service.form import MORE_PROMPTS, Input
from service.limits import Limits

PLACEHOLDERS = {"prompt_a": "a red circle", "prompt_b": "a blue square", "prompt_c": "a green star",
                "prompt_d": "a yellow triangle"}
OUTPUT_LABELS = {"gif": "GIF", "webp": "WebP", "mp4": "Video MP4", "strip": "Strip PNG", "grid": "Grid PNG",
                 "manifest": "Manifest JSON"}


def status_html(fraction: float, text: str) -> str:
    """A progress bar that stays visible while frames stream in (Gradio hides its own then)."""
    percent = round(100 * min(max(fraction, 0.0), 1.0))
    return (
        f'<div class="morph-status"><progress max="100" value="{percent}"></progress>'
        f"<span>{html.escape(text)}</span></div>"
    )


def native_size(morpher: Any, limits: Limits) -> str:
    """The first model's own size as 'WxH' (the size menu's default), within the pixel limit."""
    try:
        pipe = morpher.model.pipe
        side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    except AttributeError:  # a remote model says its size; a stand-in has none
        side = int(getattr(morpher, "native_side", 64))
    sizes = limits.sizes()
    wanted = f"{side}x{side}"
    return wanted if side * side <= limits.max_pixels else (sizes[0] if sizes else "64x64")


def _option_widget(item: Input, limits: Limits, walk: str) -> gr.components.Component:
    spec = item.option
    cap = getattr(limits, spec.limit) if spec and spec.limit else None
    info = spec.help[0].upper() + spec.help[1:] + "." if spec else None
    elem_id = f"{walk}-{item.name.replace('_', '-')}"
    common = {"label": spec.label, "elem_id": elem_id}
    if spec.kind == "int":
        return gr.Slider(spec.low or 0, cap, value=min(item.default, cap), step=1, **common)
    if spec.kind == "float":
        low = 1 if item.name == "fps" else spec.low or 0
        return gr.Slider(low, cap, value=min(item.default, cap), step=0.5 if item.name == "guidance" else 1,
                         **common)
    if spec.kind == "choice":
        return gr.Radio(list(spec.choices), value=item.default, info=info, **common)
    if spec.kind == "flag":
        return gr.Checkbox(value=item.default, **common)
    if spec.kind == "size":
        return gr.Dropdown(limits.sizes(), value=item.default, allow_custom_value=True,
                           info=f"Multiples of 8, at most {limits.max_pixels} pixels.", **common)
    if spec.kind == "grid":
        side = limits.max_grid_side
        choices = [f"{n}x{n}" for n in range(2, side + 1)]
        return gr.Dropdown(choices, value=item.default, allow_custom_value=True,
                           info=f"Rows x columns, each 2 to {side}.", **common)
    if spec.kind == "scale":
        return gr.Textbox(value=item.default, info=f"{info} Each within ±{limits.max_scale:g}.", **common)
    if spec.kind == "seeds":
        return gr.Textbox(value=item.default, info="One for all prompts, or one per prompt (e.g. 1 2).",
                          scale=4, **common)
    return gr.Textbox(value=item.default, max_lines=2, **common)


def build_inputs(inputs: list[Input], limits: Limits, models: list[str], walk: str) -> list:
    """The widgets of one tab, in the order of `inputs` (the handlers' argument order)."""
    made: dict[str, Any] = {}
    advanced = [item for item in inputs if item.option is not None and item.option.advanced]
    pictures = {item.picture_of: item for item in inputs if item.picture_of}
    for item in inputs:
        if item.picture_of:
            continue  # made beside its prompt
        if item.option is None and item.name not in (MORE_PROMPTS, "model") and item.name not in pictures:
            made[item.name] = gr.Textbox(label=item.label, placeholder=PLACEHOLDERS.get(item.name), max_lines=2,
                                         elem_id=f"{walk}-{item.name.replace('_', '-')}")
        elif item.option is None and item.name not in (MORE_PROMPTS, "model"):
            with gr.Row(equal_height=True):
                made[item.name] = gr.Textbox(
                    label=item.label, placeholder=PLACEHOLDERS.get(item.name), max_lines=2, scale=3,
                    elem_id=f"{walk}-{item.name.replace('_', '-')}",
                    info="Or upload a picture: then this text, if any, describes it.",
                )
                picture = pictures[item.name]
                made[picture.name] = gr.Image(
                    label=picture.label, type="filepath", sources=["upload"], height=110, scale=1,
                    elem_id=f"{walk}-{picture.name.replace('_', '-')}", show_label=True,
                )
        elif item.name == MORE_PROMPTS:
            with gr.Accordion("Add more prompts", open=False):
                made[item.name] = gr.Textbox(
                    label="More prompts", value="", lines=3, elem_id=f"{walk}-more-prompts",
                    info=f"One per line, appended to the chain (at most {limits.max_prompts} prompts in all).",
                )
        elif item.option is not None and not item.option.advanced:
            if item.option.kind == "seeds":
                with gr.Row(equal_height=True):
                    made[item.name] = _option_widget(item, limits, walk)
                    dice = gr.Button("Random seed", scale=1, min_width=90, elem_id=f"{walk}-dice")
                dice.click(fn=None, outputs=[made[item.name]],
                           js=f"() => String(Math.floor(Math.random() * {SEED_MAX + 1}))")
            else:
                made[item.name] = _option_widget(item, limits, walk)
    if advanced:
        with gr.Accordion("More settings", open=False):
            for item in advanced:
                made[item.name] = _option_widget(item, limits, walk)
    made["model"] = gr.Dropdown(models, value=models[0], label="Model", visible=len(models) > 1,
                                elem_id=f"{walk}-model")
    return [made[item.name] for item in inputs]


def build_outputs(walk: str, outputs: tuple[str, ...]) -> tuple[Any, Any, Any, list]:
    """The main picture, the frame gallery, the progress line and one download button per file."""
    label = "Grid" if outputs[0] == "grid" else "Morph (GIF)"
    shown = gr.Image(label=label, type="filepath", elem_id=f"{walk}-main", elem_classes=["morph-main"],
                     height=360, buttons=["download", "fullscreen"], interactive=False)
    status = gr.HTML(status_html(0.0, "ready"), elem_id=f"{walk}-status")
    with gr.Row():
        buttons = [gr.DownloadButton(OUTPUT_LABELS[name], visible=False, size="sm", elem_id=f"{walk}-download-{name}")
                   for name in outputs]
    # not "{walk}-frames": that is the Frames slider's id
    gallery = gr.Gallery(label="Frames", columns=6, height="auto", elem_id=f"{walk}-gallery",
                         elem_classes=["morph-frames"], interactive=False, format="png")
    return shown, gallery, status, buttons


NEAREST_HEADERS = ["frame", "where", "nearest prompt", "2nd", "3rd"]


def build_inspector(walk: str) -> tuple[Any, Any]:
    """The Inspect view: the path plot and a table of the prompts each frame passes nearest to."""
    with gr.Accordion("Inspect: the path through the space", open=False, elem_id=f"{walk}-inspect"):
        plot = gr.Image(label="Path plot", type="filepath", interactive=False, elem_id=f"{walk}-plot",
                        buttons=["download", "fullscreen"])
        table = gr.Dataframe(headers=NEAREST_HEADERS, label="Nearest vocabulary prompts (cosine of pooled text "
                             "embeddings)", interactive=False, elem_id=f"{walk}-nearest", wrap=True)
    return plot, table


def nearest_table(manifest_path: Any) -> list[list[Any]]:
    """Rows of the nearest-prompts table from a manifest file."""
    import json

    record = json.loads(open(manifest_path, encoding="utf-8").read())
    rows = []
    for frame, closest in zip(record["frames"], (record.get("path") or {}).get("nearest", [])):
        names = [f"{item['prompt']} ({item['cosine']:.3f})" for item in closest] + ["", "", ""]
        rows.append([frame["index"], frame.get("caption", ""), *names[:3]])
    return rows


MAX_MANIFEST_BYTES = 2 * 2**20


def read_manifest_upload(value: Any) -> tuple[str, dict[str, Any]]:
    """(walk, values) from an uploaded manifest (a Gradio file payload), checked like any request."""
    import json
    from pathlib import Path

    from service.form import values_from_manifest
    from service.limits import LimitError

    path = value.get("path") if isinstance(value, dict) else value
    if not isinstance(path, str) or not Path(path).is_file():
        raise LimitError("manifest must be the JSON file a morph returned; upload it with handle_file().")
    if Path(path).stat().st_size > MAX_MANIFEST_BYTES:
        raise LimitError(f"manifest is over {MAX_MANIFEST_BYTES // 2**20} MB: not one of ours.")
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LimitError("manifest is not valid JSON.") from None
    return values_from_manifest(record)
