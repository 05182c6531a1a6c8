"""The path inspector's figure: norms along the walk, the gaps with their cuts, and a map of the space.

Drawn with matplotlib (Agg, no display) from a manifest's `path` record and the
frames; at least 1000 px wide so it reads at a glance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

WIDTH_INCHES, DPI = 10.0, 100  # 1000 px wide
THUMBNAILS = 16  # at most this many frames shown under the gap curve


def draw_path(manifest: dict, images: list[Image.Image], path: Path | str,
              tiles: list[tuple[int, int]] | None = None) -> Path:
    """Write the inspector figure of a morph to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    record = manifest["path"]
    figure, (norms, gaps, space) = plt.subplots(
        3, 1, figsize=(WIDTH_INCHES, 13), dpi=DPI, gridspec_kw={"height_ratios": [1, 1.25, 1.6]})
    figure.suptitle(f"The walk through the model's space: {manifest['walk']} of {len(images)} frames, "
                    f"{manifest['model']}", fontsize=13)
    _norms(norms, record)
    _gaps(gaps, record, images)
    _space(space, record, manifest, tiles)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path


def _norms(axes, record: dict) -> None:
    frames = np.arange(len(record["noise_norm"]))
    chosen = record["noise_interp"]
    other = "lerp" if chosen == "slerp" else "slerp"
    axes.plot(frames, record["noise_norm"], "o-", color="tab:blue", label=f"noise norm ({chosen}, rendered)")
    axes.plot(frames, record[f"noise_norm_{other}"], "--", color="tab:blue", alpha=0.5,
              label=f"noise norm with {other} (not rendered)")
    axes.plot(frames, record["embed_norm"], "s-", color="tab:orange", label="prompt embedding norm")
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.axhline(0.71, color="tab:red", linewidth=0.8, linestyle=":", label="0.71: lerp's dip between two noises")
    axes.set_title("1. How far from the origin each frame is (1.0 = as far as a real sample)")
    axes.set_xlabel("frame")
    axes.set_ylabel("norm / keys' mean norm")
    axes.set_ylim(min(0.6, min(record[f"noise_norm_{other}"] + record["noise_norm"]) - 0.05),
                  max(1.15, max(record["embed_norm"]) + 0.05))
    axes.legend(loc="lower right", fontsize=8)


def _gaps(axes, record: dict, images: list[Image.Image]) -> None:
    gaps = record["gap"]
    if gaps:
        steps = np.arange(len(gaps)) + 0.5
        axes.plot(steps, gaps, "o-", color="tab:green", label="pixel RMSE to the next frame")
        median = float(np.median(gaps))
        axes.axhline(record["cut_factor"] * median, color="tab:red", linestyle=":",
                     label=f"cut: a gap over {record['cut_factor']:g}x the median")
        for index in record["cuts"]:
            axes.plot(steps[index], gaps[index], "x", color="tab:red", markersize=12, markeredgewidth=3)
        axes.set_ylim(0, max(gaps) * 1.15 + 1e-6)
    axes.set_xlim(-0.5, len(images) - 0.5)
    axes.set_title(f"2. The gaps between frames ({len(record['cuts'])} cut(s) marked x); the frames below")
    axes.set_ylabel("pixel RMSE")
    axes.legend(loc="upper right", fontsize=8)
    shown = np.linspace(0, len(images) - 1, min(len(images), THUMBNAILS)).round().astype(int)
    strip = np.concatenate([np.asarray(images[i].convert("RGB").resize((64, 64))) for i in shown], axis=1)
    inset = axes.inset_axes((0.0, -0.42, 1.0, 0.3))
    inset.imshow(strip, interpolation="nearest")
    inset.set_xticks([64 * k + 32 for k in range(len(shown))], [str(i) for i in shown], fontsize=7)
    inset.set_yticks([])
    inset.set_xlabel("frame")


def _space(axes, record: dict, manifest: dict, tiles: list[tuple[int, int]] | None) -> None:
    points = np.asarray(record["map"]["frames"])
    if tiles is not None:  # a grid: draw the mesh of rows and columns
        where = {tile: points[i] for i, tile in enumerate(tiles)}
        rows, columns = 1 + max(r for r, _ in tiles), 1 + max(c for _, c in tiles)
        for r in range(rows):
            line = np.asarray([where[(r, c)] for c in range(columns)])
            axes.plot(line[:, 0], line[:, 1], "-", color="tab:purple", alpha=0.6)
        for c in range(columns):
            line = np.asarray([where[(r, c)] for r in range(rows)])
            axes.plot(line[:, 0], line[:, 1], "-", color="tab:purple", alpha=0.6)
        axes.plot(points[:, 0], points[:, 1], "o", color="tab:purple", label="grid tiles")
    else:
        axes.plot(points[:, 0], points[:, 1], "o-", color="tab:purple", label="the walk, frame by frame")
        axes.annotate("start", points[0], textcoords="offset points", xytext=(6, 6), fontsize=8)
    for name, (x, y) in record["map"]["landmarks"].items():
        axes.plot(x, y, "^", color="tab:grey", markersize=7)
        axes.annotate(name, (x, y), textcoords="offset points", xytext=(5, -10), fontsize=8, color="dimgrey")
    keys = np.asarray(record["map"]["keys"])
    axes.plot(keys[:, 0], keys[:, 1], "*", color="tab:red", markersize=16, label="keyframes")
    axes.plot([], [], "^", color="tab:grey", label="nearest vocabulary prompts")
    axes.set_title("3. A map of the space: PCA of pooled text embeddings (frames, keys, nearest prompts)")
    axes.set_xlabel("first principal component")
    axes.set_ylabel("second principal component")
    axes.legend(loc="best", fontsize=8)
