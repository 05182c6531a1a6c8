"""`python -m service`: load the configured models, then serve the page and the API (`/morph`, `/grid`, `/direction`).

    python -m service                       # bundled model, http://127.0.0.1:7860
    python -m service --host 0.0.0.0 --port 8000 --model stabilityai/sd-turbo --model bundled
    python -m service --backend ray --replicas 2   # renders on 2 Ray Serve replicas (README: Serving on Ray)
    LATENT_MORPH_AUTH=ann:secret python -m service

See `python -m service --help` for every flag and its environment variable.
"""

from __future__ import annotations

import os

# Before gradio is imported anywhere: no usage statistics, no version check.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from service.config import ServiceConfig, parse_config, port_problem  # noqa: E402

log = logging.getLogger("service")
BUNDLED_ALIASES = ("bundled", "default")


def model_specs(config: ServiceConfig) -> tuple:
    """The models the local backend loads: the allow-list, else every bundled model this
    checkout has (the page's menu, the default first), else None (the tiny model)."""
    from pipelines.loading import bundled_present

    return config.models or tuple(bundled_present()) or (None,)


def load_morphers(config: ServiceConfig) -> dict:
    """Model name -> Morpher, for every spec in the allow-list (the bundled models when none).

    The Morphers share one frame cache (keys include the model's fingerprint), whose
    folder is the CLI's too: a morph someone already rendered comes back without denoising.
    """
    from pipelines.cache import default_frame_cache
    from pipelines.loading import default_model_spec, load_model
    from pipelines.engine import Morpher
    from pipelines.speed import SpeedSettings

    specs = model_specs(config)
    frame_cache = default_frame_cache(config.frame_cache_mb)
    morphers = {}
    for spec in specs:
        started = time.perf_counter()
        resolved = default_model_spec() if spec in (None, *BUNDLED_ALIASES) else spec
        model = load_model(resolved, device=config.device)
        if model.name in morphers:
            continue
        morphers[model.name] = Morpher(model, cache=frame_cache, speed=SpeedSettings.for_device(model.device, config.compile, config.lanes))
        log.info("loaded %s on %s in %.1f s", model.name, model.device, time.perf_counter() - started)
    return morphers


def deploy_remote(config: ServiceConfig) -> dict:
    """Model name -> RemoteMorpher: each model on its own Ray Serve replicas (`--backend ray`).

    The replicas share the frame cache folder this process would use (on a cluster,
    mount it at the same path on every node).
    """
    from pipelines.cache import default_cache_dir
    from service.backends import BackendUnavailable

    try:
        from service.backends.ray_serve import connect, deploy
    except ImportError as error:
        raise BackendUnavailable(f"--backend ray needs ray[serve] (pip install -r requirements.txt): {error}") from None

    gcs_address = connect(config.backend)
    remotes: dict = {}
    # Without an allow-list, only the default model: every replica reserves a CPU (or a GPU), so
    # serving each bundled model would need models x replicas of them (4 on this 2-core machine).
    for index, spec in enumerate(config.models or (None,)):
        resolved = None if spec in (None, *BUNDLED_ALIASES) else spec
        remote = deploy(resolved, index, config.backend, queue_size=config.limits.queue_size,
                        deadline_s=config.limits.deadline_s, device=config.device,
                        cache_folder=str(default_cache_dir()), cache_mb=config.frame_cache_mb, gcs_address=gcs_address)
        remotes.setdefault(remote.model.name, remote)
    return remotes


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, load the models, launch; returns the exit code (2 on a busy port or a model that will not load)."""
    config = parse_config(argv)
    busy = port_problem(config.host, config.port)  # before any model loads: a busy port costs nothing
    if busy:
        print(f"error: {busy}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up probes
    from pipelines import threads

    log.info("torch threads: %s", threads.configure(config.threads).describe())
    from pipelines.loading import ModelLoadError
    from service.backends import BackendUnavailable

    try:
        morphers = deploy_remote(config) if config.backend.backend == "ray" else load_morphers(config)
    except (ModelLoadError, BackendUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from service.server import launch, own_temp_dir

    # gradio is first imported in here, so it sees this process's own folder
    with own_temp_dir(config.temp_dir, config.port):
        from service.app import build_demo

        demo = build_demo(morphers, config.limits, cache_s=config.cache_minutes * 60)
        launch(demo, config)  # with the request and upload guards; returns when the server stops
    return 0


if __name__ == "__main__":
    sys.exit(main())
