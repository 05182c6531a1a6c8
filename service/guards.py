"""The service's request guards: two ASGI middlewares for Gradio's FastAPI app.

Gradio 6 caps one uploaded file (`max_file_size`), but not a request body (ten
100 MB bodies to `/gradio_api/queue/join` once held 3.2 GB), not how much is
uploaded, and it answers 500 for an API name it does not know.

- `RequestGuards`: a body over `--max-body-size` answers 413, before a byte of it is read
  when its Content-Length says so, as soon as the limit is passed when it is chunked;
  `/gradio_api/upload` is refused when the app has no file input, and otherwise counted
  against the upload quota (`service.uploads`) as it arrives;
- `KnownEndpoints`: an unknown API name or fn_index answers 404.

`service.server.launch` installs them (`launch(app_kwargs={"middleware": ...})`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import uploads
from service.uploads import Refusal

if TYPE_CHECKING:
    import gradio as gr

API = "/gradio_api"
UPLOAD_PATH = API + "/upload"
# routes that look a function up by the name in their path (`route_utils.get_fn`, or the API info for v2) ...
_BY_NAME = re.compile(rf"^{API}/(call/v2|call|run|api)/([^/]+)$")
# ... and those that take an fn_index in their JSON body
_BY_INDEX = re.compile(rf"^{API}/(queue/join|run/[^/]+|api/[^/]+)$")


class BodyRefused(HTTPException, MultiPartException):
    """Raised from `receive` to stop reading a body.

    An HTTPException, because FastAPI's body reader passes those on ("if a middleware
    raises an HTTPException, it should be raised again"); a MultiPartException,
    because Gradio's multipart parser then deletes the partial files it wrote.
    """

    def __init__(self, refusal: Refusal) -> None:
        HTTPException.__init__(self, refusal.status, refusal.message)
        self.message = refusal.message


async def answer(refusal: Refusal, scope: Scope, send: Send, plain: bool = False) -> None:
    """Send `refusal` as FastAPI would (JSON `detail`), or as plain text, as Gradio's upload route does."""
    from starlette.responses import JSONResponse, PlainTextResponse

    response = (PlainTextResponse(refusal.message, refusal.status) if plain
                else JSONResponse({"detail": refusal.message}, refusal.status))
    await response(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    return int(value) if value is not None and value.strip().isdigit() else None


async def call_counted(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                       on_chunk: Callable[[bytes], Refusal | None], plain: bool = False) -> tuple[int, bytes]:
    """Call `app`, showing it each body chunk only after `on_chunk` let it through.

    When `on_chunk` refuses, the app's reading stops there and its answer (if it had
    not started one) is replaced by the refusal. Returns the status and body sent.
    """
    refused: Refusal | None = None
    sent: dict[str, Any] = {"status": 0, "body": []}

    async def counted() -> Message:
        nonlocal refused
        if refused is None:
            message = await receive()
            if message["type"] == "http.request":
                refused = on_chunk(message.get("body", b""))
            if refused is None:
                return message
        raise BodyRefused(refused)  # and again, should the app try to read on

    async def relay(message: Message) -> None:
        if refused is not None and not sent["status"]:
            return  # the app's answer to a body it could not finish reading
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"].append(message.get("body", b""))
        await send(message)

    try:
        await app(scope, counted, relay)
    except BodyRefused:
        pass  # the app did not catch it: answered below
    if refused is not None and not sent["status"]:
        await answer(refused, scope, send, plain)
        return refused.status, b""
    return sent["status"], b"".join(sent["body"])


class RequestGuards:
    """Caps request bodies; refuses or counts uploads (see the module's docstring)."""

    def __init__(self, app: ASGIApp, body_limit: int, quota: uploads.UploadQuota | None) -> None:
        """`quota` None: the app has no file input, so every upload is refused."""
        self.app = app
        self.body_limit = body_limit
        self.quota = quota

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"].rstrip("/") == UPLOAD_PATH:
            await self._upload(scope, receive, send)
        else:
            await self._capped(scope, receive, send)

    async def _capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.body_limit
        refusal = Refusal(413, f"Request body over the limit of {limit:,} bytes (--max-body-size).")
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await answer(refusal, scope, send)  # unread: the server closes the connection after it
            return
        received = 0

        def on_chunk(chunk: bytes) -> Refusal | None:
            nonlocal received
            received += len(chunk)
            return refusal if received > limit else None

        await call_counted(self.app, scope, receive, send, on_chunk)

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.quota is None:
            await answer(Refusal(403, "This app takes no uploads: none of its inputs is a file."), scope, send, True)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        upload = self.quota.start(client)
        upload.size = _content_length(scope) or 0
        refusal = self.quota.refusal(upload)
        if refusal is not None:
            self.quota.drop(upload)
            await answer(refusal, scope, send, True)
            return
        upload.size = 0  # from here on, what has arrived
        parts = uploads.PartCounter(_header(scope, b"content-type") or "")

        def on_chunk(chunk: bytes) -> Refusal | None:
            upload.size += len(chunk)
            upload.files = parts.feed(chunk)
            return self.quota.refusal(upload)

        status = 0
        try:
            status, body = await call_counted(self.app, scope, receive, send, on_chunk, plain=True)
            if status == 200:
                upload.files = uploads.count_paths(body) or upload.files  # the files Gradio kept, not the form's parts
        finally:
            if status != 200:
                self.quota.drop(upload)


class KnownEndpoints:
    """404 for an API name or fn_index the app does not have, where Gradio raises (a 500)."""

    def __init__(self, app: ASGIApp, blocks: gr.Blocks) -> None:
        self.app = app
        self.blocks = blocks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"].rstrip("/")
        named = _BY_NAME.match(path)
        if named and not self._has_name(unquote(named.group(2)), public=named.group(1) == "call/v2"):
            await answer(Refusal(404, f"No API endpoint named /{unquote(named.group(2))}; "
                                      f"see {API}/info for the ones there are."), scope, send)
            return
        if _BY_INDEX.match(path):
            body, receive = await _buffered(receive)  # already capped by RequestGuards
            index, session = _fn_index(body)
            if index is not None and index not in self._fns(session):
                await answer(Refusal(404, f"No API function with fn_index {index}."), scope, send)
                return
        await self.app(scope, receive, send)

    def _has_name(self, name: str, public: bool) -> bool:
        # `/call/v2/<name>` looks the name up in the API info, which lists public endpoints only
        return any(fn.api_name == name and (not public or (fn.fn is not None and fn.api_visibility == "public"))
                   for fn in self.blocks.fns.values())

    def _fns(self, session: str | None) -> dict:
        """The functions `route_utils.get_fn` looks in: the session's (gr.render adds some), else the app's."""
        state = self.blocks.state_holder.session_data.get(session) if session else None
        return state.blocks_config.fns if state is not None else self.blocks.fns


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body, and a `receive` that hands it on again."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return body, replay


def _fn_index(body: bytes) -> tuple[int | None, str | None]:
    """(fn_index, session_hash) as Gradio's PredictBody reads them; (None, None) when it would refuse the body."""
    import json

    from gradio.data_classes import PredictBody

    try:
        predict = PredictBody.model_validate(json.loads(body))
    except ValueError:  # bad JSON, or pydantic's ValidationError: Gradio answers 422 itself
        return None, None
    return predict.fn_index, predict.session_hash
