"""Small helpers shared by the training stages: pixels, schedules, checkpoints and the log."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def save_atomically(state: dict, path: Path) -> None:
    """Write through a temporary file so a stopped run never leaves half a checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def log_line(workdir: Path, record: dict) -> None:
    """Append one JSON record (with a wall-clock stamp) to the run's log."""
    with open(workdir / "log.jsonl", "a") as handle:
        handle.write(json.dumps({**record, "time": round(time.time(), 1)}) + "\n")


def final_losses(workdir: Path, last: int = 10) -> dict[str, float]:
    """Mean of the last `last` logged losses of each stage (what the model card reports)."""
    records = [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]

    def mean_of(stage: str, key: str) -> float:
        values = [r[key] for r in records if r["stage"] == stage][-last:]
        return round(sum(values) / max(1, len(values)), 5)

    return {
        "vae_l1": mean_of("vae", "l1"),
        "decoder_l1": mean_of("decoder", "l1"),
        "unet_epsilon_mse": mean_of("unet", "mse"),
    }
