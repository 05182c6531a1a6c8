"""How much may be uploaded, by whom, and for how long the files stay.

Gradio caps one uploaded file (`max_file_size`) but not how many files a visitor
sends, and its `delete_cache` keeps uploads as long as results. Here: a quota per
client (IP address) and for the whole server over a window of `--upload-minutes`,
the files deleted when that window has passed, and the rule that an app with no
file input takes no uploads. `service.server` applies these to `/gradio_api/upload`.
Nothing here imports gradio, so `service.config` can declare the flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from email.message import Message
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MB = 2**20
_UNITS = {"b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30, "tb": 2**40}  # as Gradio's max_file_size reads them


def parse_size(text: str) -> int:
    """'1mb' -> 1048576 bytes (units b, kb, mb, gb, tb, as Gradio's `max_file_size`)."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-z]*)\s*", str(text).lower())
    if not match or match.group(2) not in _UNITS or int(match.group(1)) == 0:
        raise ValueError(f"a size looks like 1mb or 500kb (units {', '.join(_UNITS)}); got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class UploadLimits:
    """What visitors may upload. Each field has a launch flag of the same name."""

    upload_files: int = field(default=30, metadata={"help": "files one client (IP address) may upload per --upload-minutes"})
    upload_mb: float = field(default=100.0, metadata={"help": "megabytes one client may upload per --upload-minutes"})
    upload_total_mb: float = field(default=1000.0, metadata={"help": "megabytes of uploads the server keeps, from everyone"})
    upload_minutes: float = field(
        default=15.0, metadata={"help": "uploads are deleted this long after they arrive (the window of the caps above)"})

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if not value > 0:  # also refuses nan
                raise ValueError(f"{limit.name} must be positive, got {value!r}")


@dataclass(frozen=True)
class Refusal:
    """An answer instead of the app's: its status and a message naming the limit."""

    status: int
    message: str


@dataclass(eq=False)  # compared by identity: two uploads may look alike
class Upload:
    """One upload request, counted as its body arrives."""

    client: str
    at: float
    files: int = 0
    size: int = 0


class UploadQuota:
    """The uploads of the last `upload_minutes`, per client and in total, against the limits.

    Runs on the server's event loop only, so it needs no lock. An upload counts from its
    first byte: two at once from one client cannot both slip under the cap.
    """

    def __init__(self, limits: UploadLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._uploads: list[Upload] = []

    def start(self, client: str) -> Upload:
        upload = Upload(client, self.clock())
        self._uploads.append(upload)
        return upload

    def drop(self, upload: Upload) -> None:
        """Forget an upload that failed: it left no file behind."""
        self._uploads = [kept for kept in self._uploads if kept is not upload]

    def refusal(self, upload: Upload) -> Refusal | None:
        """Why `upload`, counted as it stands, goes over a limit; None when it does not."""
        limits = self.limits
        window = limits.upload_minutes * 60
        now = self.clock()
        self._uploads = [kept for kept in self._uploads if now - kept.at < window]
        mine = [kept for kept in self._uploads if kept.client == upload.client]
        per = f"per client every {limits.upload_minutes:g} minutes"
        checks = (
            (sum(kept.files for kept in mine), upload.files, limits.upload_files,
             f"{limits.upload_files} files {per} (--upload-files)"),
            (sum(kept.size for kept in mine), upload.size, limits.upload_mb * MB,
             f"{limits.upload_mb:g} MB {per} (--upload-mb)"),
            (sum(kept.size for kept in self._uploads), upload.size, limits.upload_total_mb * MB,
             f"{limits.upload_total_mb:g} MB of uploads kept by the server (--upload-total-mb)"),
        )
        for used, alone, cap, limit in checks:
            if used > cap:
                # too big on its own: asking again will not help; over the window's share: later it will
                if alone > cap:
                    return Refusal(413, f"Upload refused: over the limit of {limit}.")
                return Refusal(429, f"Upload refused: over the limit of {limit}; try again later.")
        return None


class PartCounter:
    """Counts the parts of a multipart body as it streams by, from its boundary.

    The boundary never occurs inside a part (RFC 2046), so each occurrence starts a
    part, but the last one closes the body: parts begun >= occurrences - 1.
    """

    def __init__(self, content_type: str) -> None:
        header = Message()
        header["content-type"] = content_type
        boundary = header.get_param("boundary")
        self.delimiter = b"--" + str(boundary).encode("latin-1") if isinstance(boundary, str) and boundary else b""
        self._seen = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> int:
        """The parts known to have begun, with `chunk` seen too."""
        if not self.delimiter:
            return 0
        data = self._tail + chunk
        self._seen += data.count(self.delimiter)
        self._tail = data[-(len(self.delimiter) - 1):]  # too short to hold a whole delimiter: none counted twice
        return max(self._seen - 1, 0)


def count_paths(body: bytes) -> int | None:
    """The number of files Gradio's upload route saved, from its answer (a JSON list of paths)."""
    try:
        paths = json.loads(body)
    except ValueError:
        return None
    return len(paths) if isinstance(paths, list) else None


def takes_uploads(demo: Any) -> bool:
    """Whether any event of `demo` (page or API) has a file among its inputs.

    Gradio marks a file input by `FileData` in its API description (File, Image, Audio, ...).
    """
    return any("FileData" in json.dumps(block.api_info(), default=str)
               for fn in demo.fns.values() for block in fn.inputs if hasattr(block, "api_info"))


def delete_old_uploads(demo: Any, keep_s: float, now: float | None = None) -> list[Path]:
    """Delete the files uploaded to `demo` more than `keep_s` seconds ago; returns them.

    Only Gradio's record of uploads is read (`upload_file_set`), never the folder: a
    result stays until `delete_cache` removes it, even when it has the same content
    and name as an upload (Gradio then stores both at one path).
    """
    now = time.time() if now is None else now
    results = set().union(*(files for files in demo.temp_file_sets if files is not demo.upload_file_set))
    gone = []
    for name in list(demo.upload_file_set):
        path = Path(name)
        try:
            if name in results or now - path.lstat().st_ctime <= keep_s:
                continue
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("could not delete the upload %s: %s", path, error)
            continue
        demo.upload_file_set.discard(name)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the folder Gradio made for it, once empty
        gone.append(path)
    return gone


def upload_cleaner(demo: Any, keep_s: float) -> Callable[[Any], contextlib.AbstractAsyncContextManager]:
    """A lifespan for Gradio's app (`app_kwargs["lifespan"]`): deletes uploads `keep_s` after they arrived."""
    period = min(60.0, max(1.0, keep_s / 4))

    async def clean() -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await asyncio.to_thread(delete_old_uploads, demo, keep_s)
            except Exception:  # the next round tries again; a dead task would keep uploads forever
                log.exception("cleaning the uploads failed")

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        task = asyncio.create_task(clean())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan
