"""The Ray backend's set-up: join or start Ray, deploy one Serve application per model.

    connect(options)                  # ray.init + serve.start (no HTTP proxy: Gradio is the front end)
    deploy(spec, 0, options, ...)     # serve.run(...) -> DeploymentHandle -> RemoteMorpher

Each model is one deployment of `MorphReplica` (one model per replica process):
`max_ongoing_requests=1` because a Morpher is not thread-safe (a replica renders one
morph at a time and batches its frames), `max_queued_requests` from `--queue-size`
so a full cluster refuses at once, one GPU per replica when the cluster has GPUs,
autoscaling between `--replicas` and `--max-replicas` when the latter is set.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ray import serve

from service.backends import BackendOptions, BackendUnavailable
from service.backends.replica import MorphReplica
from service.backends.streams import gcs_probe

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
APP_PREFIX = "latent-morph"
DEPLOYMENT = "MorphReplica"
DEADLINE_MARGIN_S = 60.0  # the front end's deadline fires first; the replica's only ends orphaned jobs
DESCRIBE_TIMEOUT_S = 120.0


class ServedReplica(MorphReplica):
    """`MorphReplica` as a Ray Serve deployment: it names itself by its actor's name."""

    def replica_name(self) -> str:
        try:
            return serve.get_replica_context().replica_id.to_full_id_str()
        except Exception:  # noqa: BLE001 - outside a replica (unit tests): the plain name
            return super().replica_name()


def connect(options: BackendOptions, num_cpus: int | None = None) -> str | None:
    """Start or join Ray and start Serve without its HTTP proxy; returns the GCS address (for health checks).

    `options.ray_address`: '' starts a Ray instance in this process's machine, 'auto'
    joins the one `ray start` made here, 'ray://host:port' connects with Ray Client.
    Raises BackendUnavailable when the cluster cannot be reached.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    # the replicas import this code: on one machine from here, on a cluster from the same path
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}}
    settings: dict[str, Any] = {"runtime_env": runtime_env, "namespace": APP_PREFIX, "log_to_driver": False}
    if not options.ray_address:
        settings.update(include_dashboard=False, num_cpus=num_cpus)
    try:
        if not ray.is_initialized():
            ray.init(address=options.ray_address or None, **settings)
        serve.start(proxy_location="Disabled")
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise BackendUnavailable(f"could not reach Ray at {options.ray_address or 'a new local instance'}: "
                                 f"{error}") from None
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - Ray Client has no GCS address to probe
        return None


def replica_settings(options: BackendOptions, queue_size: int, gpus: bool) -> dict[str, Any]:
    """The deployment's options: replicas (or autoscaling), request limits and resources per replica."""
    settings: dict[str, Any] = {
        "name": DEPLOYMENT,
        "max_ongoing_requests": 1,  # one morph at a time per replica: a Morpher is not thread-safe
        "max_queued_requests": queue_size,  # a full queue refuses at once (BackPressureError), never hangs
        "ray_actor_options": {"num_cpus": 1, **({"num_gpus": 1} if gpus else {})},
        "graceful_shutdown_timeout_s": 5,
    }
    if options.max_replicas > options.replicas:
        settings["autoscaling_config"] = {
            "min_replicas": options.replicas,
            "initial_replicas": options.replicas,
            "max_replicas": options.max_replicas,
            "target_ongoing_requests": 1,
        }
    else:
        settings["num_replicas"] = options.replicas
    return settings


def cluster_has_gpus(device: str) -> bool:
    """Replicas ask for a GPU when the cluster has one and the device allows it."""
    import ray

    return device in ("auto", "cuda") and ray.cluster_resources().get("GPU", 0) > 0


def deploy(spec: str | None, index: int, options: BackendOptions, *, queue_size: int, deadline_s: float,
           device: str = "auto", cache_folder: str | None = None, cache_mb: float = 0.0,
           gcs_address: str | None = None) -> Any:
    """Serve one model on `options.replicas` replicas; returns its RemoteMorpher once they are up."""
    from service.backends.ray_client import RemoteMorpher

    deployment = serve.deployment(ServedReplica).options(
        **replica_settings(options, queue_size, cluster_has_gpus(device)))
    app = deployment.bind(spec, device, cache_folder, cache_mb, deadline_s + DEADLINE_MARGIN_S)
    try:
        handle = serve.run(app, name=f"{APP_PREFIX}-{index}", route_prefix=None)
    except RuntimeError as error:  # a replica that cannot load its model fails the deployment
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BackendUnavailable(f"the replicas of model {spec or 'bundled'} did not start: {first}") from None
    info = handle.describe.remote().result(timeout_s=DESCRIBE_TIMEOUT_S)
    log.info("serving %s on %s replica(s) (%s)", info["name"], options.replicas, info["device"])
    return RemoteMorpher(handle, info, options, alive=gcs_probe(gcs_address))


def shutdown() -> None:
    """Delete the applications and stop Serve (the Ray instance, if this process started it, goes too)."""
    import ray

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
