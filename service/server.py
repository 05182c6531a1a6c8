"""Launching the page and the API behind the service's guards, in a folder of its own.

The guards (`service.guards`: request body caps, the upload quota, 404 for unknown
API names) go to Gradio's FastAPI app as `app_kwargs`, with a lifespan that deletes
old uploads (`service.uploads`). Each process keeps its uploads and results in a
folder of its own (`own_temp_dir`), so two instances on one machine never delete
each other's files.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service import uploads

if TYPE_CHECKING:
    import gradio as gr

    from service.config import ServiceConfig

log = logging.getLogger(__name__)


@contextmanager
def own_temp_dir(parent: str, port: int) -> Iterator[Path]:
    """A new folder inside `parent` for this process's uploads and results, as GRADIO_TEMP_DIR.

    Gradio names a cached file by its content, so two instances sharing its default
    folder share files: one's cleanup (`delete_cache`, or its exit, which empties its
    part of the cache) deletes them under the other. Enter before gradio is imported:
    some of its modules read GRADIO_TEMP_DIR at import. The folder is removed on the
    way out, also after a plain `kill` (SIGTERM, what Docker sends), made to unwind
    like Ctrl-C.
    """
    if "gradio" in sys.modules:
        log.warning("gradio was imported before its temp folder was set: some files may go to the old one")
    Path(parent).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"latent-morph-{port}-", dir=parent))
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    in_main = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main else None
    log.info("uploads and results in %s", folder)
    try:
        yield folder
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old_handler)
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
        shutil.rmtree(folder, ignore_errors=True)


def app_kwargs(demo: gr.Blocks, config: ServiceConfig) -> dict[str, Any]:
    """The guards, as arguments of Gradio's FastAPI app: middlewares, and a lifespan that deletes old uploads."""
    from starlette.middleware import Middleware

    from service import guards

    quota = uploads.UploadQuota(config.uploads) if uploads.takes_uploads(demo) else None
    return {
        # the first is the outermost: bodies are capped before KnownEndpoints reads one
        "middleware": [
            Middleware(guards.RequestGuards, body_limit=uploads.parse_size(config.max_body_size), quota=quota),
            Middleware(guards.KnownEndpoints, blocks=demo),
        ],
        "lifespan": uploads.upload_cleaner(demo, config.uploads.upload_minutes * 60),
    }


def launch(demo: gr.Blocks, config: ServiceConfig, **extra: Any) -> None:
    """`demo.launch` with the service's settings and guards; blocks until the server stops.

    `extra` adds or overrides launch arguments (tests pass `prevent_thread_lock=True`).
    """
    from service.app import CSS

    settings: dict[str, Any] = {
        "server_name": config.host,
        "server_port": config.port,
        "share": False,
        "auth": config.auth,
        "show_error": False,  # users see gr.Error messages only, never tracebacks
        "max_file_size": config.max_file_size,
        "footer_links": ["api"],
        "css": CSS,
        "ssr_mode": False,
        "mcp_server": False,
        "app_kwargs": app_kwargs(demo, config),
    }
    blocking = not extra.get("prevent_thread_lock", False)
    demo.launch(**{**settings, **extra, "prevent_thread_lock": True})
    runner = getattr(demo, "runner", None)
    if runner is not None:
        runner.start_timing()  # now that the page is served: see service.runner.Runner
    if blocking:
        demo.block_thread()
