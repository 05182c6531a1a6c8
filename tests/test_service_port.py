"""`python -m service` on a busy port: one line and exit code 2, before any model loads."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from service.config import port_problem


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something already listens on (127.0.0.1)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_busy_port_exits_2_naming_it_before_any_model_loads(busy_port: int, monkeypatch, capsys) -> None:
    import service.__main__ as entry

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for a port that is taken")

    monkeypatch.setattr(entry, "load_morphers", refuse)
    monkeypatch.setattr(entry, "deploy_remote", refuse)
    assert entry.main(["--host", "127.0.0.1", "--port", str(busy_port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"127.0.0.1:{busy_port}" in err and "--port" in err and "Traceback" not in err


def test_port_problem_names_the_address_and_the_flag(busy_port: int) -> None:
    problem = port_problem("127.0.0.1", busy_port)
    assert problem is not None and problem.startswith(f"cannot listen on 127.0.0.1:{busy_port}: ")
    assert "choose another port with --port" in problem
    wildcard = port_problem("0.0.0.0", busy_port)  # the wildcard address includes 127.0.0.1
    assert wildcard is not None and f":{busy_port}" in wildcard
    assert port_problem("127.0.0.1", _free_port()) is None


def test_a_host_that_does_not_resolve_is_named(monkeypatch) -> None:
    def no_such_host(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    problem = port_problem("nowhere.invalid", 7860)
    assert problem == ("cannot listen on nowhere.invalid:7860: Name or service not known; "
                       "choose another port with --port (or another address with --host)")
