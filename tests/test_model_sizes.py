"""The published SD configs give the published sizes; the GPU benchmark refuses cleanly where it cannot run.

Models are counted on the meta device (no memory, no weights); nothing is downloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.sd_configs import MODELS, count_parameters

ROOT = Path(__file__).resolve().parents[1]

# Parameter counts of the released checkpoints (diffusers / transformers modules, every weight and bias).
PUBLISHED = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sd21": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sd-turbo": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_configs_build_the_published_parameter_counts(name: str) -> None:
    assert count_parameters(MODELS[name]) == PUBLISHED[name]


def test_native_sizes_and_usage_match_the_releases() -> None:
    sizes = {name: (spec.size, spec.unet["sample_size"] * 8) for name, spec in MODELS.items()}
    assert sizes == {"sd15": (512, 512), "sd21": (768, 768), "sd-turbo": (512, 512), "sdxl": (1024, 1024)}
    assert not MODELS["sd-turbo"].uses_cfg and MODELS["sd15"].uses_cfg
    assert MODELS["sdxl"].unet["addition_embed_type"] == "text_time"


def _bench(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_bench", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the benchmark would run")
def test_gpu_bench_without_cuda_exits_with_its_message(tmp_path: Path) -> None:
    done = _bench("--out", str(tmp_path / "out.json"), CUDA_VISIBLE_DEVICES="")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("gpu_bench: No CUDA GPU is available")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.json").exists()


def test_gpu_bench_offline_model_exits_with_its_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmarks.gpu_bench import main

    # in this process (the hub is off, see conftest): the loader is imported once for the whole file
    status = main(["--device", "cpu", "--model", "nobody/no-such-model", "--out", str(tmp_path / "out.json")])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("gpu_bench: Model 'nobody/no-such-model' is not in the local Hugging Face cache")
    assert "--random-weights" in error
    assert not (tmp_path / "out.json").exists()


def test_gpu_estimate_picks_a_setting_within_the_budget() -> None:
    from benchmarks.model_sizes_report import gpu_estimate

    def run(frames: int, unet: float, vae: float) -> dict:
        return {"config": {"frames": frames}, "weights_rss_gib": 4.0,
                "peak_rss_gib": {"unet": 4.0 + unet, "vae": 4.0 + vae}}

    counts = {"sd15": PUBLISHED["sd15"]}
    rows, advice = gpu_estimate({"sd15-per-frame": run(1, 1.0, 3.0), "sd15-batch": run(2, 1.6, 6.0)}, counts)
    assert [row[0] for row in rows] == [1, 2, 4, 8]
    # 1.99 GiB of fp16 weights + 0.8 overhead + 2 x the 3.0 GiB one-frame decode > 8 GiB
    assert advice == "no batch size fits the estimate"
    rows, advice = gpu_estimate({"sd15-per-frame": run(1, 0.8, 1.0), "sd15-batch": run(2, 1.2, 2.0)}, counts)
    assert advice.startswith("batch size 8 (2 x 8 UNet rows")  # 2.79 + 2 x 1.8 GiB of UNet rows <= 8
    assert "without VAE slicing (the engine turns it on for CUDA) batch size 2," in advice  # 2.79 + 2 x 4 x 1.0 > 8
