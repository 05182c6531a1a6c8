"""The path inspector: norms on known vectors, cuts, nearest prompts, the plot file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipelines.__main__ import main
from pipelines.inspect import cuts, path_record
from pipelines.keys import EncodedKey, PromptKey, TextEmbeds
from pipelines.landmarks import nearest, vocabulary_for
from pipelines.render import RenderedFrame
from pipelines.request import MorphRequest
from pipelines.walks import get_walk


def _keys(dim: int = 4 * 64 * 64) -> list[EncodedKey]:
    generator = torch.Generator().manual_seed(0)
    return [EncodedKey(torch.randn((1, dim), generator=generator), TextEmbeds(torch.randn((1, 3, 8), generator=generator)))
            for _ in range(2)]


@pytest.mark.parametrize("method,middle", [("lerp", 0.7071), ("slerp", 1.0)])
def test_two_independent_gaussians_dip_to_071_with_lerp_and_not_with_slerp(tiny_model, method, middle) -> None:
    request = MorphRequest(prompts=("a red circle", "a blue square"), frames=5, noise_interp=method, size=(32, 32))
    points = get_walk("chain").plan(request)
    frames = [RenderedFrame(i, point, Image.new("RGB", (8, 8), (i * 40, 0, 0))) for i, point in enumerate(points)]
    keys = [PromptKey("a red circle", 0), PromptKey("a blue square", 1)]
    record = path_record(request, frames, _keys(), keys, tiny_model.pipe, tiny_model.name)
    assert record["noise_norm"][2] == pytest.approx(middle, abs=0.02)
    other = "slerp" if method == "lerp" else "lerp"
    assert record[f"noise_norm_{other}"][2] == pytest.approx(1.7071 - middle, abs=0.02)
    assert record["noise_norm"][0] == pytest.approx(1.0, abs=0.02)
    # the angle between consecutive noises: a quarter of the ~90 degrees between two Gaussians
    assert record["noise_angle_deg"][0] == pytest.approx(22.5, abs=1.5 if method == "slerp" else 8)
    assert len(record["nearest"]) == 5 and len(record["map"]["frames"]) == 5


def test_cuts_are_gaps_over_three_times_the_median() -> None:
    assert cuts([0.1, 0.1, 0.5, 0.1]) == [2]
    assert cuts([0.1, 0.1, 0.2, 0.1]) == []
    assert cuts([]) == []


def test_nearest_prompts_rank_by_cosine() -> None:
    landmarks = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    found = nearest(torch.tensor([[1.0, 0.1]]), landmarks, ("x", "y", "xy"), count=2)
    assert [name for name, _ in found[0]] == ["x", "xy"]
    assert vocabulary_for("bundled:shapes64")[0] == "a red circle"
    assert "a sunset over the ocean" in vocabulary_for("some/hub-model")


def test_the_plot_is_drawn_and_the_manifest_lists_the_path(tiny_model_dir: Path, tmp_path: Path) -> None:
    code = main(["a red circle", "a blue square", "--model", str(tiny_model_dir), "--frames", "4", "--steps", "2",
                 "--size", "32x32", "--seed", "1", "2", "--noise-interp", "lerp", "--plot", str(tmp_path / "p.png"),
                 "--manifest", str(tmp_path / "m.json")])
    assert code == 0
    with Image.open(tmp_path / "p.png") as plot:
        assert plot.width >= 600 and plot.height > plot.width // 2
        colours = plot.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # drawn, not blank
    path = json.loads((tmp_path / "m.json").read_text())["path"]
    assert path["noise_interp"] == "lerp" and min(path["noise_norm"]) < 0.8
    assert set(path) >= {"noise_norm", "noise_norm_slerp", "embed_norm", "gap", "cuts", "nearest", "map"}


def test_a_grid_plot_draws_its_mesh(tiny_model_dir: Path, tmp_path: Path) -> None:
    code = main(["a red circle", "a blue circle", "a red square", "a blue square", "--walk", "grid", "--grid",
                 "2x3", "--model", str(tiny_model_dir), "--steps", "2", "--size", "32x32",
                 "--plot", str(tmp_path / "g.png")])
    assert code == 0 and (tmp_path / "g.png").stat().st_size > 10_000


def test_a_models_landmarks_are_encoded_once(tiny_model, monkeypatch) -> None:
    from pipelines import landmarks

    calls = []
    encode = landmarks.pooled_embeddings

    def counted(pipe, prompts):
        calls.append(len(prompts))
        return encode(pipe, prompts)

    monkeypatch.setattr(landmarks, "pooled_embeddings", counted)
    vocabulary = landmarks.vocabulary_for("bundled:shapes64")
    first = landmarks.vocabulary_embeddings(tiny_model.pipe, vocabulary)
    again = landmarks.vocabulary_embeddings(tiny_model.pipe, vocabulary)
    assert calls == [len(vocabulary)] and torch.equal(first, again)
