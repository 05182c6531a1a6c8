"""Launch flags and environment variables of `python -m service`."""

from __future__ import annotations

from dataclasses import fields

import pytest

from service.cost import device_limits
from service.config import build_parser, parse_auth, parse_config
from service.limits import Limits


def test_defaults_serve_loopback_on_7860_with_the_default_model() -> None:
    config = parse_config([], environ={})
    assert (config.host, config.port, config.models, config.device, config.auth) == (
        "127.0.0.1", 7860, (), "auto", None,
    )


def test_environment_then_flags() -> None:
    env = {
        "GRADIO_SERVER_NAME": "0.0.0.0",
        "GRADIO_SERVER_PORT": "8000",
        "LATENT_MORPH_MODELS": "a, b ,a",
        "LATENT_MORPH_MAX_FRAMES": "12",
        "LATENT_MORPH_AUTH": "ann:s3cret:with-colon",
    }
    config = parse_config([], environ=env)
    assert (config.host, config.port, config.models) == ("0.0.0.0", 8000, ("a", "b"))
    assert config.limits.max_frames == 12
    assert config.auth == ("ann", "s3cret:with-colon")
    flagged = parse_config(["--port", "9000", "--model", "c", "--max-frames", "20", "--deadline-s", "5"], environ=env)
    assert (flagged.port, flagged.models, flagged.limits.max_frames, flagged.limits.deadline_s) == (
        9000, ("c",), 20, 5.0,
    )


def test_every_limit_has_a_flag_and_a_variable_including_the_new_walks() -> None:
    config = parse_config(["--max-grid-side", "4"], environ={"LATENT_MORPH_MAX_SCALE": "2.5"})
    assert (config.limits.max_grid_side, config.limits.max_scale) == (4, 2.5)
    # a CPU's defaults are smaller than a GPU's (service/cost.py); a flag or a variable still wins
    assert parse_config(["--device", "cpu"], environ={}).limits == device_limits("cpu")
    assert device_limits("cpu").max_pixels < Limits().max_pixels
    assert parse_config(["--device", "cuda"], environ={}).limits == Limits()
    help_text = build_parser({}).format_help()
    for field in fields(Limits):
        assert "--" + field.name.replace("_", "-") in help_text
        assert "LATENT_MORPH_" + field.name.upper() in help_text
    for endpoint in ("/morph", "/grid", "/direction"):  # the description names every API endpoint
        assert endpoint in help_text


def test_the_frame_cache_size_is_shared_with_the_cli_variable() -> None:
    assert parse_config([], environ={}).frame_cache_mb == 1024
    assert parse_config([], environ={"LATENT_MORPH_FRAME_CACHE_MB": "0"}).frame_cache_mb == 0
    assert parse_config(["--frame-cache-mb", "64"], environ={"LATENT_MORPH_FRAME_CACHE_MB": "0"}).frame_cache_mb == 64


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--max-frames", "0"], {}),
        (["--port", "70000"], {}),
        ([], {"LATENT_MORPH_MAX_STEPS": "lots"}),
        ([], {"LATENT_MORPH_AUTH": "no-colon"}),
        (["--device", "tpu"], {}),
        (["--frame-cache-mb", "-1"], {}),
        ([], {"LATENT_MORPH_FRAME_CACHE_MB": "nan"}),
        (["--max-grid-side", "1"], {}),
        (["--max-scale", "0"], {}),
        ([], {"LATENT_MORPH_MAX_SCALE": "wide"}),
    ],
)
def test_bad_configuration_exits_with_code_2(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_config(argv, environ=env)
    assert exited.value.code == 2


def test_auth_parsing() -> None:
    assert parse_auth(None) is None
    assert parse_auth("") is None
    with pytest.raises(ValueError):
        parse_auth(":pw")


def test_the_backend_options_have_flags_and_variables_and_default_to_local() -> None:
    from service.backends import BackendOptions

    assert parse_config([], environ={}).backend == BackendOptions()  # local: nothing new needed
    config = parse_config(["--backend", "ray", "--replicas", "2", "--ray-address", "auto"],
                          environ={"LATENT_MORPH_SHARD_FRAMES": "4", "LATENT_MORPH_REPLICAS": "5"})
    assert config.backend == BackendOptions(backend="ray", replicas=2, ray_address="auto", shard_frames=4)
    assert config.backend.most_replicas == 2


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--backend", "spark"], "invalid choice: 'spark'"),
        (["--backend", "ray", "--replicas", "0"], "replicas must be at least 1, got 0"),
        (["--backend", "ray", "--replicas", "3", "--max-replicas", "2"], "max_replicas must be 0 or at least"),
    ],
)
def test_bad_backend_options_exit_with_code_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_config(argv, environ={})
    assert caught.value.code == 2
    assert needle in capsys.readouterr().err


def test_without_an_allow_list_every_bundled_model_is_served_the_default_first(monkeypatch) -> None:
    from pipelines import loading
    from service.__main__ import model_specs

    monkeypatch.setattr(loading, "bundled_present", lambda: ["scenes", "shapes64"])
    assert model_specs(parse_config([], environ={})) == ("scenes", "shapes64")
    assert model_specs(parse_config(["--model", "tiny"], environ={})) == ("tiny",)
    monkeypatch.setattr(loading, "bundled_present", lambda: [])
    assert model_specs(parse_config([], environ={})) == (None,)
