"""The service's guards, against the real service in a subprocess and raw HTTP.

Request bodies are capped (413 before an oversized body is read), uploads are
refused by an app without file inputs and otherwise capped per client and in
total (429/413 naming the flag), deleted after `--upload-minutes`, an unknown
API name answers 404, and each instance keeps its files in a folder of its own.
Clients are told apart by IP address; the server trusts X-Forwarded-For from
loopback (uvicorn's default), which stands in here for several visitors.
"""

from __future__ import annotations

import os
import re
import select
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import httpx

from service.config import parse_config
from service.server import own_temp_dir
from service.testing import ServerProcess, free_port
from service.uploads import PartCounter, Upload, UploadLimits, UploadQuota, parse_size

MB = 2**20
WAIT_S = 60.0  # generous: only ever waited on for something that must happen
pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


@pytest.fixture(scope="module")
def temp_parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The --temp-dir every service of this module shares, as instances on one machine share /tmp/gradio."""
    return tmp_path_factory.mktemp("guards") / "temp"


@pytest.fixture(scope="module")
def server(temp_parent: Path, tiny_model_dir: Path) -> Iterator[ServerProcess]:
    """One service with small per-client upload caps: 3 files, 1 MB."""
    args = ["--model", "tiny", "--device", "cpu", "--upload-files", "3", "--upload-mb", "1", "--temp-dir", str(temp_parent)]
    with ServerProcess(args, temp_parent.parent / "server.log") as running:
        yield running


def upload(server: ServerProcess, files: list[tuple[str, bytes]], client: str) -> httpx.Response:
    """POST files to the upload route as visitor `client` (an IP address)."""
    return httpx.post(f"{server.url}gradio_api/upload", files=[("files", item) for item in files],
                      headers={"X-Forwarded-For": client}, timeout=WAIT_S)


def raw_post(server: ServerProcess, path: str, headers: dict[str, str], first: bytes,
             more: Iterable[bytes] = ()) -> bytes:
    """Send a request's head and `first` body bytes, then `more` until the server answers; its whole answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as sock:
        head = "".join(f"{name}: {value}\r\n" for name, value in {"Host": "127.0.0.1", **headers}.items())
        sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + first)
        for chunk in more:
            view = memoryview(chunk)
            while view:
                readable, writable, _ = select.select([sock], [sock], [], WAIT_S)
                if readable or not writable:
                    break
                try:
                    view = view[sock.send(view):]
                except (BrokenPipeError, ConnectionResetError):
                    break  # the server stopped reading
            if view:
                break
        return read_answer(sock)


def read_answer(sock: socket.socket) -> bytes:
    """An HTTP answer's head and its whole Content-Length body, which may arrive in a later packet."""
    answer = b""
    while not _complete(answer):
        received = sock.recv(65536)
        if not received:
            break
        answer += received
    return answer


def _complete(answer: bytes) -> bool:
    head, separator, body = answer.partition(b"\r\n\r\n")
    if not separator:
        return False
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return length is None or len(body) >= int(length.group(1))


def test_a_declared_100mb_body_is_refused_before_it_is_read(server: ServerProcess) -> None:
    # only 1 KB of the declared 100 MB is ever sent: a server reading the body would wait, not answer
    answer = raw_post(server, "/gradio_api/queue/join",
                      {"Content-Type": "application/json", "Content-Length": str(100 * MB)}, b'{"data": [' + b" " * 1024)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"--max-body-size" in answer
    assert httpx.get(f"{server.url}gradio_api/app_id").status_code == 200  # and it keeps serving


def test_chunked_bodies_are_counted_as_they_arrive_and_never_held(server: ServerProcess) -> None:
    chunk = b"x" * 65536
    before = server.rss_mb()
    for _ in range(10):  # ten 100 MB bodies once held 3.2 GB
        answer = raw_post(server, "/gradio_api/queue/join",
                          {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                          b"a\r\n{\"data\": [\r\n", (b"10000\r\n" + chunk + b"\r\n" for _ in range(1600)))
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert server.rss_mb() - before < 200, "the server kept the bodies it refused"
    # a body under the limit still reaches Gradio (which asks for a session hash)
    small = httpx.post(f"{server.url}gradio_api/queue/join", json={"data": ["x" * 1000], "fn_index": 0})
    assert small.status_code == 400 and "Session hash" in small.text, small.text


def test_a_json_body_over_the_limit_gets_413_naming_it(server: ServerProcess) -> None:
    answer = httpx.post(f"{server.url}gradio_api/call/morph", json={"data": ["x" * (2 * MB)]})
    assert answer.status_code == 413 and "--max-body-size" in answer.json()["detail"], answer.text


@pytest.mark.parametrize("path, body", [
    ("call/nonexistent", {"data": []}),
    ("call/v2/nonexistent", {}),
    ("run/nonexistent", {"data": []}),
    ("queue/join", {"data": [], "fn_index": 999, "session_hash": "guards"}),
    ("queue/join", {"data": [], "fn_index": -1, "session_hash": "guards"}),
])
def test_unknown_api_names_answer_404(server: ServerProcess, path: str, body: dict) -> None:
    answer = httpx.post(f"{server.url}gradio_api/{path}", json=body)
    assert answer.status_code == 404, answer.text
    assert "No API" in answer.json()["detail"]


def test_known_api_names_still_reach_gradio(server: ServerProcess) -> None:
    # a malformed body: Gradio's own 422, so the name was let through and no job started
    assert httpx.post(f"{server.url}gradio_api/call/morph", json={"data": "not a list"}).status_code == 422
    info = httpx.get(f"{server.url}gradio_api/info").json()
    assert "/morph" in info["named_endpoints"]
    assert httpx.post(f"{server.url}gradio_api/queue/join", json={"fn_index": 0}).status_code == 422


def test_uploads_over_the_file_count_are_refused_naming_the_limit(server: ServerProcess) -> None:
    for index in range(3):
        assert upload(server, [(f"count{index}.txt", b"a note")], "10.0.0.1").status_code == 200
    refused = upload(server, [("count3.txt", b"a note")], "10.0.0.1")
    assert refused.status_code == 429 and "--upload-files" in refused.text, refused.text
    # another visitor is not held back by the first one
    assert upload(server, [("other.txt", b"a note")], "10.0.0.2").status_code == 200


def test_one_request_with_too_many_files_is_refused_and_leaves_none(server: ServerProcess) -> None:
    names = [f"many{index}.txt" for index in range(5)]
    refused = upload(server, [(name, name.encode()) for name in names], "10.0.0.3")
    assert refused.status_code == 413 and "--upload-files" in refused.text, refused.text
    kept = upload(server, [("probe.txt", b"probe")], "10.0.0.3").json()[0]
    folder = Path(kept).parents[1]  # <this process's folder>/<content hash>/probe.txt
    assert not [path for path in folder.rglob("*") if path.name in names]


def test_uploads_over_the_size_cap_are_refused_naming_the_limit(server: ServerProcess) -> None:
    too_big = upload(server, [("big.bin", b"x" * (MB + 1024))], "10.0.0.4")
    assert too_big.status_code == 413 and "--upload-mb" in too_big.text, too_big.text
    assert upload(server, [("half.bin", b"y" * (MB // 2))], "10.0.0.5").status_code == 200
    over = upload(server, [("half2.bin", b"z" * (MB // 2))], "10.0.0.5")
    assert over.status_code == 429 and "--upload-mb" in over.text, over.text


def test_a_chunked_upload_is_counted_as_it_arrives(server: ServerProcess) -> None:
    boundary = "guardsboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"stream.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    chunk = b"s" * 65536
    answer = raw_post(server, "/gradio_api/upload",
                      {"Content-Type": f"multipart/form-data; boundary={boundary}", "Transfer-Encoding": "chunked",
                       "X-Forwarded-For": "10.0.0.6"},
                      f"{len(head):x}\r\n".encode() + head + b"\r\n", (b"10000\r\n" + chunk + b"\r\n" for _ in range(64)))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # Gradio streams a file into its folder as it arrives: the refused one's partial file is gone
    probe = Path(upload(server, [("after.txt", b"after")], "10.0.0.7").json()[0])
    assert [path for path in probe.parents[1].iterdir() if path.is_file()] == []


def test_an_app_without_file_inputs_refuses_uploads() -> None:
    import gradio as gr

    from service.config import ServiceConfig
    from service.server import launch

    with gr.Blocks() as demo:
        text, shown = gr.Textbox(), gr.Textbox()
        gr.Button().click(lambda value: value, text, shown, api_name="echo")
    port = free_port()
    launch(demo, ServiceConfig(port=port), prevent_thread_lock=True, quiet=True)
    try:
        answer = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", files={"files": ("a.txt", b"a note")})
        assert answer.status_code == 403 and "takes no uploads" in answer.text, answer.text
    finally:
        demo.close()


def test_uploads_are_deleted_after_upload_minutes(tmp_path: Path) -> None:
    import gradio as gr

    from service.config import ServiceConfig
    from service.server import launch

    with gr.Blocks() as demo:
        picture, shown = gr.File(), gr.Textbox()
        gr.Button().click(lambda value: str(value), picture, shown, api_name="name")
    port = free_port()
    launch(demo, ServiceConfig(port=port, uploads=UploadLimits(upload_minutes=0.02)), prevent_thread_lock=True,
           quiet=True)
    try:
        # an upload is not held to --max-body-size (1 MB), only to its own limits
        files = [("files", ("note.txt", tmp_path.name.encode())), ("files", ("big.bin", b"b" * (MB * 3 // 2)))]
        answer = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", files=files)
        assert answer.status_code == 200, answer.text
        uploaded = [Path(name) for name in answer.json()]
        assert uploaded[0].read_text() == tmp_path.name and uploaded[1].stat().st_size == MB * 3 // 2
        deadline = time.monotonic() + WAIT_S  # deleted 1.2 s after they arrived, at the next round
        while any(path.exists() for path in uploaded) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(path.exists() for path in uploaded), "an upload outlived --upload-minutes"
        assert not demo.upload_file_set & {str(path) for path in uploaded}
    finally:
        demo.close()


def test_delete_old_uploads_spares_young_ones_and_results(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from service.uploads import delete_old_uploads

    paths = {name: tmp_path / name / "file.txt" for name in ("picture", "manifest", "result")}
    for path in paths.values():
        path.parent.mkdir()
        path.write_text("x")
    uploaded, results = {str(path) for path in paths.values()}, {str(paths["result"])}
    demo = SimpleNamespace(upload_file_set=uploaded, temp_file_sets=[uploaded, results])
    made = max(path.lstat().st_ctime for path in paths.values())
    assert delete_old_uploads(demo, keep_s=60, now=made + 30) == []
    assert sorted(delete_old_uploads(demo, keep_s=60, now=made + 61)) == sorted([paths["picture"], paths["manifest"]])
    assert not paths["picture"].parent.exists() and uploaded == {str(paths["result"])}
    assert paths["result"].exists()  # a result at an upload's path is left to Gradio's delete_cache


@pytest.fixture(scope="module")
def second(temp_parent: Path, tiny_model_dir: Path) -> Iterator[ServerProcess]:
    """Another instance on this machine, with the same --temp-dir, keeping at most 1 MB of uploads."""
    args = ["--model", "tiny", "--device", "cpu", "--upload-total-mb", "1", "--temp-dir", str(temp_parent)]
    with ServerProcess(args, temp_parent.parent / "second.log") as running:
        yield running


def test_uploads_over_the_server_total_are_refused(second: ServerProcess) -> None:
    # before the next test, which stops `second`
    assert upload(second, [("share.bin", b"a" * (MB * 6 // 10))], "10.2.0.1").status_code == 200
    refused = upload(second, [("share.bin", b"b" * (MB * 6 // 10))], "10.2.0.2")
    assert refused.status_code == 429 and "--upload-total-mb" in refused.text, refused.text


def test_two_instances_keep_their_files_apart(server: ServerProcess, second: ServerProcess, temp_parent: Path) -> None:
    # the same file to both: Gradio names it by its content, so in one folder it would be one file
    mine, theirs = (Path(upload(each, [("same.txt", b"same")], "10.1.0.1").json()[0]) for each in (server, second))
    own = [path.parents[1] for path in (mine, theirs)]
    assert own[0] != own[1] and own[0].parent == own[1].parent == temp_parent
    assert own[0].name.startswith(f"latent-morph-{server.port}-")
    assert own[1].name.startswith(f"latent-morph-{second.port}-")
    # the second one's exit empties its cache (Gradio deletes every file it made) and removes its folder ...
    second.stop()  # a plain kill (SIGTERM)
    assert not own[1].exists()
    # ... and leaves the first one's alone
    assert mine.read_bytes() == b"same"


def test_the_quota_frees_up_after_its_window_and_tells_413_from_429() -> None:
    now = [0.0]
    quota = UploadQuota(UploadLimits(upload_files=2, upload_mb=1, upload_minutes=1), clock=lambda: now[0])

    def attempt(client: str, files: int, size: int):
        upload = quota.start(client)
        upload.files, upload.size = files, size
        refusal = quota.refusal(upload)
        if refusal is not None:
            quota.drop(upload)
        return refusal

    assert attempt("a", 2, 100) is None
    assert attempt("a", 1, 100).status == 429  # over the window's share: later will do
    assert attempt("b", 3, 100).status == 413  # over the cap on its own: never will
    assert attempt("b", 1, MB + 1).status == 413
    now[0] = 61.0
    assert attempt("a", 1, 100) is None
    assert isinstance(quota.start("c"), Upload)


def test_parts_are_counted_across_chunk_edges() -> None:
    counter = PartCounter("multipart/form-data; boundary=XyZ")
    body = b"--XyZ\r\n a \r\n--XyZ\r\n b \r\n--XyZ--\r\n"
    counts = [counter.feed(body[index:index + 3]) for index in range(0, len(body), 3)]
    assert counts[-1] == 2 and counts == sorted(counts)
    assert PartCounter("application/json").feed(body) == 0


def test_the_flags_and_their_variables() -> None:
    config = parse_config([], environ={"GRADIO_TEMP_DIR": "/srv/gradio", "LATENT_MORPH_UPLOAD_FILES": "5"})
    assert config.temp_dir == "/srv/gradio" and config.uploads.upload_files == 5
    assert config.max_body_size == "1mb" and parse_size(config.max_body_size) == MB
    config = parse_config(["--temp-dir", "/a", "--max-body-size", "64kb", "--upload-minutes", "2"],
                          environ={"LATENT_MORPH_TEMP_DIR": "/b"})
    assert (config.temp_dir, parse_size(config.max_body_size), config.uploads.upload_minutes) == ("/a", 65536, 2.0)
    for argv in (["--max-body-size", "lots"], ["--upload-mb", "0"]):
        with pytest.raises(SystemExit) as caught:
            parse_config(argv, environ={})
        assert caught.value.code == 2


def test_the_own_folder_is_gradios_while_serving_and_removed_after(tmp_path: Path) -> None:
    before = os.environ.get("GRADIO_TEMP_DIR")
    with own_temp_dir(str(tmp_path), 7861) as folder:
        assert folder.parent == tmp_path and folder.name.startswith("latent-morph-7861-")
        assert os.environ["GRADIO_TEMP_DIR"] == str(folder)
        (folder / "result.gif").write_bytes(b"GIF89a")
    assert not folder.exists() and os.environ.get("GRADIO_TEMP_DIR") == before
    assert list(tmp_path.iterdir()) == []
