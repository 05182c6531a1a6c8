"""Launch configuration of the service: command-line flags, each with an environment variable.

A flag given on the command line wins over its environment variable, which wins
over the default. Host and port also read Gradio's own `GRADIO_SERVER_NAME` /
`GRADIO_SERVER_PORT`, so the usual Gradio deployment recipes keep working.
The password for the optional login is read from the environment only, never a
flag, so it does not show up in `ps`.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from pipelines.cache import DISK_BYTES
from pipelines.lanes import add_lanes_flag
from pipelines.compiling import add_compile_flag
from pipelines.threads import add_threads_flag
from service.backends import OPTION_FIELDS, BackendOptions
from pipelines.limits import device_limits
from service.cost import SAFETY
from service.jobs import UNREAD_S
from service.limits import Limits
from service.uploads import UploadLimits, parse_size

ENV_PREFIX = "LATENT_MORPH_"
DEFAULT_FRAME_CACHE_MB = DISK_BYTES / 2**20  # the CLI's default too
AUTH_ENV = ENV_PREFIX + "AUTH"  # "user:password"
GRADIO_TEMP_PARENT = os.path.join(tempfile.gettempdir(), "gradio")  # Gradio's own default folder


@dataclass(frozen=True)
class ServiceConfig:
    """Everything `python -m service` needs to start."""

    host: str = "127.0.0.1"
    port: int = 7860
    models: tuple[str, ...] = ()  # model specs; empty = every bundled model present, the default first
    device: str = "auto"
    limits: Limits = Limits()
    auth: tuple[str, str] | None = None
    max_file_size: str = "10mb"  # one uploaded keyframe picture, at most
    cache_minutes: int = 60  # results are deleted from Gradio's cache after this long
    frame_cache_mb: float = DEFAULT_FRAME_CACHE_MB  # rendered frames kept on disk (shared with the CLI); 0 = memory only
    backend: BackendOptions = BackendOptions()  # in this process, or on Ray Serve replicas
    max_body_size: str = "1mb"  # any request body but an upload, at most
    uploads: UploadLimits = UploadLimits()  # per client and in total; deleted after upload_minutes
    temp_dir: str = GRADIO_TEMP_PARENT  # this process makes its own folder for uploads and results in here
    threads: int | None = None  # torch's CPU threads; None = auto, the cores other processes leave free
    compile: str = "auto"  # torch.compile of the UNet: auto (where it pays), on, off (pipelines/speed.py)
    lanes: int = 1  # CPU worker processes a UNet call is split over: opt-in (pipelines/lanes.py)


def _env(environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = environ.get(name)
        if value is not None and value.strip() != "":
            return value.strip()
    return None


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """'user:password' -> ('user', 'password'); None or '' -> no login."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError(f"{AUTH_ENV} must look like user:password")
    return user, password


def add_dataclass_flags(parser: argparse.ArgumentParser, env: Mapping[str, str], defaults: Any,
                        help_prefix: str = "") -> None:
    """One flag per field of a frozen dataclass, its default, choices and help from the field itself."""
    for field in fields(defaults):
        flag = "--" + field.name.replace("_", "-")
        env_name = ENV_PREFIX + field.name.upper()
        kind = type(getattr(defaults, field.name))
        raw = _env(env, env_name)
        parser.add_argument(
            flag,
            dest=field.name,
            type=kind,
            choices=field.metadata.get("choices"),
            # argparse converts a string default with `type`, so a bad variable gets a clean error
            default=raw if raw is not None else getattr(defaults, field.name),
            help=f"{help_prefix}{field.metadata.get('help', field.name)} ({env_name})",
        )


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The flags of `python -m service`, with defaults taken from `environ`."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the latent morph web page and its API (endpoints /morph, /grid and /direction).",
        epilog=(
            "The default limits depend on --device: a CPU gets fewer and smaller frames than a GPU. "
            "Each model is timed once at start-up; a request estimated (x"
            f"{SAFETY:g}) to take longer than --deadline-s is refused before any work, saying what would fit. "
            f"A job whose caller reads none of its results for {UNREAD_S:g} s (a queue join whose stream "
            "is never opened, or a caller that left) is cancelled: skipped before its work, or stopped at "
            "its next step."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default=_env(env, ENV_PREFIX + "HOST", "GRADIO_SERVER_NAME") or "127.0.0.1",
        help=f"address to listen on ({ENV_PREFIX}HOST or GRADIO_SERVER_NAME); 0.0.0.0 to serve the network",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(_env(env, ENV_PREFIX + "PORT", "GRADIO_SERVER_PORT") or 7860),
        help=f"port ({ENV_PREFIX}PORT or GRADIO_SERVER_PORT)",
    )
    models_env = _env(env, ENV_PREFIX + "MODELS")
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        default=None,
        metavar="SPEC",
        help=(
            "a model visitors may pick: hub id, local diffusers folder, .safetensors file, 'tiny' or "
            f"'bundled'; repeat for several ({ENV_PREFIX}MODELS, comma-separated). Default: the bundled offline model"
        ),
    )
    parser.set_defaults(env_models=tuple(spec.strip() for spec in (models_env or "").split(",") if spec.strip()))
    parser.add_argument(
        "--device",
        default=_env(env, ENV_PREFIX + "DEVICE") or "auto",
        choices=("auto", "cpu", "cuda", "mps"),
        help=f"where the models run ({ENV_PREFIX}DEVICE)",
    )
    add_dataclass_flags(parser, env, Limits(), "at most this many: ")
    add_dataclass_flags(parser, env, BackendOptions())
    parser.add_argument(
        "--max-file-size",
        default=_env(env, ENV_PREFIX + "MAX_FILE_SIZE") or "10mb",
        help=f"largest upload Gradio accepts ({ENV_PREFIX}MAX_FILE_SIZE)",
    )
    parser.add_argument(
        "--max-body-size",
        default=_env(env, ENV_PREFIX + "MAX_BODY_SIZE") or "1mb",
        help=f"largest request body but an upload; a bigger one is refused (413) unread ({ENV_PREFIX}MAX_BODY_SIZE)",
    )
    add_dataclass_flags(parser, env, UploadLimits())
    parser.add_argument(
        "--temp-dir",
        default=_env(env, ENV_PREFIX + "TEMP_DIR", "GRADIO_TEMP_DIR") or GRADIO_TEMP_PARENT,
        help=(
            "uploads and results go to a new folder latent-morph-<port>-* made in here at start and removed "
            "at exit, so two instances never delete each other's files "
            f"({ENV_PREFIX}TEMP_DIR or GRADIO_TEMP_DIR)"
        ),
    )
    add_threads_flag(parser, env)
    add_compile_flag(parser, env)
    add_lanes_flag(parser, env)
    parser.add_argument(
        "--cache-minutes",
        type=int,
        default=int(_env(env, ENV_PREFIX + "CACHE_MINUTES") or 60),
        help=f"results are deleted this long after they are made ({ENV_PREFIX}CACHE_MINUTES)",
    )
    parser.add_argument(
        "--frame-cache-mb",
        type=float,
        default=float(_env(env, ENV_PREFIX + "FRAME_CACHE_MB") or DEFAULT_FRAME_CACHE_MB),
        help=(
            "disk space for rendered frames, shared with the CLI, so a repeated or re-timed morph "
            f"renders only new frames; 0 keeps them in memory only ({ENV_PREFIX}FRAME_CACHE_MB)"
        ),
    )
    return parser


def use_device_defaults(parser: argparse.ArgumentParser, env: Mapping[str, str], argv: Sequence[str] | None) -> None:
    """The limits' defaults for the chosen --device (`pipelines.limits.device_limits`); a flag or variable still wins."""
    device = argparse.ArgumentParser(add_help=False)  # only --device, so --help still lists every flag
    device.add_argument("--device", default=_env(env, ENV_PREFIX + "DEVICE") or "auto")
    defaults = device_limits(device.parse_known_args(argv)[0].device)
    parser.set_defaults(**{field.name: getattr(defaults, field.name) for field in fields(Limits)
                           if _env(env, ENV_PREFIX + field.name.upper()) is None})


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """Flags (then environment variables, then defaults) -> ServiceConfig. Exits 2 on bad values."""
    env = os.environ if environ is None else environ
    parser = build_parser(env)
    use_device_defaults(parser, env, argv)
    args = parser.parse_args(argv)
    try:
        limits = Limits(**{field.name: getattr(args, field.name) for field in fields(Limits)})
        backend = BackendOptions(**{field.name: getattr(args, field.name) for field in OPTION_FIELDS})
        uploads = UploadLimits(**{field.name: getattr(args, field.name) for field in fields(UploadLimits)})
        auth = parse_auth(_env(env, AUTH_ENV))
    except ValueError as error:
        parser.error(str(error))
    try:
        parse_size(args.max_body_size)
    except ValueError as error:
        parser.error(f"--max-body-size: {error}")
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    if args.cache_minutes < 1:
        parser.error(f"--cache-minutes must be at least 1, got {args.cache_minutes}")
    if not args.frame_cache_mb >= 0:  # also refuses nan
        parser.error(f"--frame-cache-mb must be 0 or more, got {args.frame_cache_mb}")
    models = tuple(args.models) if args.models else args.env_models
    # the same spec twice would load the same weights twice
    models = tuple(dict.fromkeys(models))
    return ServiceConfig(
        host=args.host,
        port=args.port,
        models=models,
        device=args.device,
        limits=limits,
        auth=auth,
        max_file_size=args.max_file_size,
        cache_minutes=args.cache_minutes,
        frame_cache_mb=args.frame_cache_mb,
        backend=backend,
        max_body_size=args.max_body_size,
        uploads=uploads,
        temp_dir=args.temp_dir,
        threads=args.threads,
        compile=args.compile,
        lanes=args.lanes,
    )


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port (one line naming them and the flags), or None.

    A bind test, as Gradio's own before it starts: checked right after the flags are
    read, so a busy port costs nothing instead of a model load. Gradio also probes
    127.0.0.1 whatever the host, so that address is tried too.
    """
    for address in dict.fromkeys((host.strip("[]"), "127.0.0.1")):  # Gradio takes "[::1]" for ::1
        try:
            family, kind, proto, _, where = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM,
                                                                flags=socket.AI_PASSIVE)[0]
            with socket.socket(family, kind, proto) as probe:
                # as uvicorn does: a port left in TIME_WAIT by an earlier server is free
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(where)
        except OSError as error:
            reason = error.strerror or str(error)
            return (f"cannot listen on {address}:{port}: {reason}; "
                    "choose another port with --port (or another address with --host)")
    return None
