"""The drawn keyframe pictures and the inversion benchmark's script (on the tiny model, a few seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks.pictures import SETS, draw_set
from pipelines.pictures import read_picture


def test_the_pictures_are_drawn_alike_every_time_and_read_as_keyframes(tmp_path: Path) -> None:
    for name in SETS:
        first = draw_set(name, tmp_path / "a" / name)
        second = draw_set(name, tmp_path / "b" / name)
        for (drawing, path), (_, again) in zip(first, second):
            assert path.read_bytes() == again.read_bytes(), drawing.file
            picture = read_picture(path, (64, 64))
            assert picture.image.size == (64, 64) and picture.record["original_size"] == list(drawing.size)
    records = [read_picture(path, (64, 64)).record for _, path in draw_set("shapes64", tmp_path / "c")]
    assert {record["format"] for record in records} == {"PNG", "JPEG"}
    assert any(record["alpha_composited_on"] for record in records)  # the RGBA cut-out
    assert any(record["crop"][0] > 0 for record in records) and any(record["crop"][1] > 0 for record in records)


def test_fixes_tried_on_inverted_latents() -> None:
    from benchmarks.inversion_bench import fix_adain, fix_adain_faded, fix_renormalise

    inverted = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.7 + 0.2
    fresh = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(fix_renormalise(inverted, fresh).norm(), fresh.norm())
    matched = fix_adain(inverted, fresh)
    assert torch.allclose(matched.mean(dim=(2, 3)), torch.zeros(1, 4), atol=1e-5)
    assert torch.allclose(matched.std(dim=(2, 3)), torch.ones(1, 4), atol=1e-5)
    assert torch.equal(fix_adain_faded(inverted, fresh, 0.0), inverted)


def test_the_benchmark_runs_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    from benchmarks.inversion_bench import main

    out = tmp_path / "bench.json"
    assert main(["--model", str(tiny_model_dir), "--quick", "--no-write", "--json", str(out)]) == 0
    raw = json.loads(out.read_text())
    assert {row["prompt"] for row in raw["reconstruction"]} == {"", raw["pictures"][0]["prompt"],
                                                                raw["pictures"][1]["prompt"]}
    empty = [row for row in raw["reconstruction"] if not row["prompt"]]
    assert all(row["gN_vs_input_db"] == row["g1_vs_input_db"] for row in empty)  # guidance does nothing there
    for picture in raw["pictures"]:
        chains = [row for row in raw["chains"] if row["picture"] == picture["file"]
                  and row["variant"] not in ("reference", "engine-empty")]
        assert len({row["keyframe_vs_input_db"] for row in chains}) == 1  # no fix touches the keyframe
    for row in raw["engine"]:
        assert row["linear"]["max_pixel_diff_vs_by_hand"] <= 2  # the by-hand chain is the engine's
        assert row["inversions_run"] == 1  # linear and even share one inversion
