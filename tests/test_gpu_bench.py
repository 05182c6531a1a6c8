"""The GPU benchmark's method list, figures and table, run on the CPU with the tiny model.

The refusals (no CUDA GPU, a model not in the cache) are tested in tests/test_model_sizes.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from PIL import Image

from benchmarks.gpu_bench import main, method_list, parse_args
from benchmarks.gpu_bench_report import add_quality, markdown


def _names(*argv: str) -> list[str]:
    return [method.name for method in method_list(torch.device("cpu"), parse_args(list(argv)))]


def test_method_list_follows_the_compile_flag_and_the_batch_size() -> None:
    eager = _names("--compile", "off")
    assert eager[:2] == ["stock per-frame", "stock batched 4"]
    assert not any("compiled" in name for name in eager)
    assert _names("--compile", "both") == _names("--compile", "on")  # the old spelling still runs
    assert "engine, compiled" in _names("--compile", "on")
    # the peers' batch is in the list already; another one adds the engine at it, before the approximate modes
    assert _names("--compile", "off", "--batch-size", "4") == eager
    extra = _names("--compile", "off", "--batch-size", "2")
    assert extra.index("engine, eager, 2 a batch") < extra.index("deepcache-2")
    assert len(extra) == len(eager) + 1


def test_figures_compare_with_the_engine_eager_frames_and_the_stock_batched_time() -> None:
    grey, white = Image.new("RGB", (8, 8), (128, 128, 128)), Image.new("RGB", (8, 8), (255, 255, 255))
    frames = {"stock batched 4": [grey, white], "engine, eager": [grey, white], "deepcache-2": [grey, grey]}
    rows = [{"method": name, "exact": name != "deepcache-2", "seconds": seconds, "frames_per_s": 2 / seconds,
             "warmup_s": seconds, "peak_gib": None} for name, seconds in zip(frames, (4.0, 2.0, 1.0))]
    add_quality(rows, frames, plain=[grey, white])
    by_name = {row["method"]: row for row in rows}
    assert [by_name[name]["vs_stock_batched"] for name in frames] == [1.0, 2.0, 4.0]
    assert by_name["engine, eager"]["psnr_vs_exact"] == {"mean_db": None, "min_db": None, "equal_frames": 2}
    assert by_name["engine, eager"]["keyframe_psnr_db"] == [None, None]  # equal to the plain renders
    approximate = by_name["deepcache-2"]["psnr_vs_exact"]
    assert approximate["equal_frames"] == 1 and math.isfinite(approximate["mean_db"])
    assert by_name["deepcache-2"]["jump_ratio"] is None  # no gap between equal frames: undefined
    json.dumps(rows, allow_nan=False)  # the JSON file stays strict JSON


def test_a_cpu_run_writes_every_method_with_its_figures(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--device", "cpu", "--model", str(tiny_model_dir), "--frames", "4", "--size", "64", "--steps", "2",
            "--compile", "off", "--batch-size", "2", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert [row["method"] for row in result["rows"]] == _names(*argv)
    for row in result["rows"]:
        assert row["seconds"] > 0 and row["warmup_s"] > 0 and row["peak_gib"] is None
        assert set(row) >= {"vs_stock_batched", "psnr_vs_exact", "keyframe_psnr_db", "jump_ratio"}
    exact = [row for row in result["rows"] if row["exact"]]
    # the exact methods render the engine's frames, float rounding aside
    assert all(row["psnr_vs_exact"]["mean_db"] is None or row["psnr_vs_exact"]["mean_db"] > 40 for row in exact)
    table = out.with_suffix(".md").read_text()
    assert "| stock batched 4 | exact |" in table and "1.00x" in table
    assert table == markdown(result) + "\n"
