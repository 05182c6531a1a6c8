"""A bounded cache of rendered frames: in memory (LRU) and on disk (PNG files, size-capped).

A frame is a pure function of what goes into the pipeline call that draws it:
the model, the two keyframes' prompts and seeds, t, the negative prompt, steps,
guidance, size, the scheduler and its config, the embedding interpolation, dtype
and device. `frame_key` hashes all of that into one hex string, so re-timing a
morph, rendering it again with more frames, or repeating a request reuses frames
instead of denoising them again. The Morpher builds the fields (`Morpher.frame_fields`);
this module only stores images under keys.

Disk entries are ordinary PNG files (lossless, so a cached frame has exactly the
pixels it was rendered with) named by their key, in `$LATENT_MORPH_CACHE/frames`
or `~/.cache/latent-morph/frames`. Several processes (the CLI, the service) may
share the folder: files are written atomically, and when the folder grows past its
cap the least recently used files (by modification time, refreshed on every hit)
are deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from PIL import Image, PngImagePlugin

# Part of every key: bump when the way frames are rendered changes, so old entries are never reused.
KEY_VERSION = 1
MEMORY_ITEMS = 512
MEMORY_BYTES = 256 * 2**20
DISK_BYTES = 1024 * 2**20
# After eviction the folder is brought down to this share of its cap, so eviction runs rarely.
DISK_LOW_WATER = 0.8
# PNG text chunk holding the full key, checked on every read (a renamed or corrupt file is a miss).
KEY_CHUNK = "latent-morph-key"


def frame_key(fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the fields as canonical JSON; floats are written exactly (float.hex)."""

    def exact(value: Any) -> Any:
        if isinstance(value, float):
            return value.hex()
        if isinstance(value, Mapping):
            return {str(key): exact(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [exact(item) for item in value]
        if value is None or isinstance(value, (str, int, bool)):
            return value
        return str(value)

    text = json.dumps({"key_version": KEY_VERSION, **exact(dict(fields))}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def default_cache_dir() -> Path:
    """`$LATENT_MORPH_CACHE/frames`, else `~/.cache/latent-morph/frames` (the tiny model's cache root)."""
    root = os.environ.get("LATENT_MORPH_CACHE") or Path.home() / ".cache" / "latent-morph"
    return Path(root) / "frames"


@dataclass(frozen=True)
class CachedFrame:
    """A stored frame: its pixels and whether the safety checker flagged it."""

    image: Image.Image
    nsfw: bool = False


@dataclass
class CacheStats:
    """Counters since the cache was made."""

    hits: int = 0  # found in memory or on disk
    disk_hits: int = 0  # of which found only on disk
    misses: int = 0
    stores: int = 0
    evicted_memory: int = 0
    evicted_disk: int = 0


def image_bytes(image: Image.Image) -> int:
    """Memory an image's pixels take (what the memory bound counts)."""
    return image.width * image.height * len(image.getbands())


class FrameCache:
    """Frames by key: an LRU in memory bounded by count and bytes, and an optional size-capped folder.

    Thread-safe (one lock); a service worker thread and the main thread may share it.
    `folder=None` keeps frames in memory only.
    """

    def __init__(
        self,
        memory_items: int = MEMORY_ITEMS,
        memory_bytes: int = MEMORY_BYTES,
        folder: Path | str | None = None,
        disk_bytes: int = DISK_BYTES,
    ) -> None:
        if memory_items < 0 or memory_bytes < 0 or disk_bytes < 0:
            raise ValueError("cache bounds must be >= 0")
        self.memory_items = memory_items
        self.memory_bytes = memory_bytes
        self.folder = Path(folder) if folder is not None else None
        self.disk_bytes = disk_bytes
        self.stats = CacheStats()
        self._memory: OrderedDict[str, CachedFrame] = OrderedDict()
        self._memory_used = 0
        self._disk_used: int | None = None  # measured on first write
        self._lock = threading.Lock()

    # ---- lookups -------------------------------------------------------------------------

    def get(self, key: str) -> CachedFrame | None:
        """The frame stored under `key`, from memory or disk, or None."""
        with self._lock:
            frame = self._memory.get(key)
            if frame is not None:
                self._memory.move_to_end(key)
                self.stats.hits += 1
                return frame
            frame = self._read(key)
            if frame is None:
                self.stats.misses += 1
                return None
            self.stats.hits += 1
            self.stats.disk_hits += 1
            self._remember(key, frame)
            return frame

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._memory or (self._path(key) is not None and self._path(key).is_file())

    def put(self, key: str, image: Image.Image, nsfw: bool = False) -> None:
        """Store a frame in memory and, when there is a folder, on disk."""
        frame = CachedFrame(image.copy(), bool(nsfw))
        with self._lock:
            self.stats.stores += 1
            self._remember(key, frame)
            self._write(key, frame)

    def clear(self, disk: bool = False) -> None:
        """Forget every frame in memory (and delete the folder's frames when `disk`)."""
        with self._lock:
            self._memory.clear()
            self._memory_used = 0
            if disk and self.folder is not None:
                for path in self._files():
                    path.unlink(missing_ok=True)
                self._disk_used = 0

    @property
    def memory_used(self) -> int:
        """Bytes of pixels held in memory."""
        return self._memory_used

    def __len__(self) -> int:
        return len(self._memory)

    def disk_used(self) -> int:
        """Bytes of the PNG files in the folder (0 without a folder)."""
        with self._lock:
            return sum(self._sizes().values()) if self.folder is not None else 0

    # ---- memory --------------------------------------------------------------------------

    def _remember(self, key: str, frame: CachedFrame) -> None:
        size = image_bytes(frame.image)
        if key in self._memory:
            self._memory_used -= image_bytes(self._memory.pop(key).image)
        if self.memory_items == 0 or size > self.memory_bytes:
            return
        self._memory[key] = frame
        self._memory_used += size
        while len(self._memory) > self.memory_items or self._memory_used > self.memory_bytes:
            _, dropped = self._memory.popitem(last=False)
            self._memory_used -= image_bytes(dropped.image)
            self.stats.evicted_memory += 1

    # ---- disk ----------------------------------------------------------------------------

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / key[:2] / f"{key}.png"

    def _files(self) -> list[Path]:
        return [] if self.folder is None or not self.folder.is_dir() else list(self.folder.glob("*/*.png"))

    def _sizes(self) -> dict[Path, int]:
        sizes = {}
        for path in self._files():
            try:
                sizes[path] = path.stat().st_size
            except FileNotFoundError:  # removed by another process meanwhile
                pass
        return sizes

    def _read(self, key: str) -> CachedFrame | None:
        path = self._path(key)
        if path is None:
            return None
        try:
            with Image.open(path) as stored:
                stored.load()
                if stored.text.get(KEY_CHUNK) != key:
                    return None
                frame = CachedFrame(stored.convert("RGB"), stored.text.get("nsfw") == "1")
            os.utime(path)  # recently used: evicted last
            return frame
        except (OSError, ValueError):  # missing, being replaced, or not a PNG: a miss
            return None

    def _write(self, key: str, frame: CachedFrame) -> None:
        path = self._path(key)
        if path is None or self.disk_bytes == 0:
            return
        info = PngImagePlugin.PngInfo()
        info.add_text(KEY_CHUNK, key)
        info.add_text("nsfw", "1" if frame.nsfw else "0")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            frame.image.save(partial, format="PNG", pnginfo=info)
            size = partial.stat().st_size
            os.replace(partial, path)  # atomic: readers see the old file or the whole new one
        except OSError:
            return  # a full or read-only disk costs the cache, never the render
        if self._disk_used is None:
            self._disk_used = sum(self._sizes().values())
        else:
            self._disk_used += size
        if self._disk_used > self.disk_bytes:
            self._evict_disk()

    def _evict_disk(self) -> None:
        """Delete the least recently used files until the folder is under its low-water mark."""
        sizes = self._sizes()
        total = sum(sizes.values())  # re-measured: other processes write here too
        by_age = sorted(sizes, key=lambda path: _mtime(path))
        for path in by_age:
            if total <= self.disk_bytes * DISK_LOW_WATER:
                break
            path.unlink(missing_ok=True)
            total -= sizes[path]
            self.stats.evicted_disk += 1
        self._disk_used = total


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def default_frame_cache(disk_megabytes: float | None = None) -> FrameCache:
    """The cache the CLI and the service use: memory plus the default folder, shared on disk.

    `disk_megabytes` caps the folder (default: `LATENT_MORPH_FRAME_CACHE_MB`, else 1024);
    0 keeps frames in memory only.
    """
    if disk_megabytes is None:
        disk_megabytes = float(os.environ.get("LATENT_MORPH_FRAME_CACHE_MB", DISK_BYTES / 2**20))
    if disk_megabytes <= 0:
        return FrameCache()
    return FrameCache(folder=default_cache_dir(), disk_bytes=int(disk_megabytes * 2**20))


def model_fingerprint(pipe: Any) -> str:
    """A short hash that tells one model's weights from another's, cheap to compute.

    Component classes and configs, plus a strided sample of every parameter tensor
    (at most 16 values each, taken on the device, moved once): a retrained or
    fine-tuned model in the same folder gets a new fingerprint.
    """
    import torch

    digest = hashlib.sha256(type(pipe).__name__.encode())
    for name in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2"):
        component = getattr(pipe, name, None)
        if component is None:
            continue
        config = getattr(component, "config", None)
        config_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
        digest.update(f"{name}:{type(component).__name__}:".encode())
        digest.update(json.dumps(config_dict, sort_keys=True, default=str).encode())
        samples = []
        with torch.no_grad():
            for parameter in component.parameters():
                flat = parameter.detach().reshape(-1)
                samples.append(flat[:: max(1, flat.numel() // 16)][:16].float())
        if samples:
            digest.update(torch.cat(samples).cpu().numpy().tobytes())
    return digest.hexdigest()[:32]
