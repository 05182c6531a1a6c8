"""Where renders run: in this process (`local`, the default) or on Ray Serve replicas (`ray`).

The page, the API and `service.runner.Runner` are the same for both. With `local`
the Runner drives an in-process `pipelines.engine.Morpher`; with `ray` it drives a
`service.backends.ray_client.RemoteMorpher`, a stand-in with the Morpher's few
front-end methods (`model`, `resolve`) plus `morph_work`, which sends the render to a
replica through a Ray Serve `DeploymentHandle` and streams progress and frames back.

Nothing here imports ray: `python -m service --backend local` never needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


class BackendBusy(Exception):
    """Every replica is working and the deployment's queue is full: try again later."""


class BackendUnavailable(Exception):
    """The render cluster (or the replica a job ran on) went away; the message says which."""


@dataclass(frozen=True)
class BackendOptions:
    """How renders are placed. Each field has a launch flag of the same name (`service/config.py`)."""

    backend: str = field(default="local", metadata={
        "choices": ("local", "ray"),
        "help": "where renders run: in this process, or on Ray Serve replicas (one model each)"})
    replicas: int = field(default=1, metadata={
        "help": "Ray Serve replicas per model (--backend ray); one GPU each when the cluster has GPUs"})
    max_replicas: int = field(default=0, metadata={
        "help": "autoscale between --replicas and this many replicas by queued requests; 0 = a fixed number"})
    ray_address: str = field(default="", metadata={
        "help": "'' starts a Ray instance on this machine; 'auto' joins the cluster `ray start` made here; "
                "'ray://host:10001' a remote one"})
    shard_frames: int = field(default=8, metadata={
        "help": "a morph of at least twice this many frames is split over the replicas in ranges of at least "
                "this many frames (they share the frame cache); 0 = never split"})

    def __post_init__(self) -> None:
        choices = type(self).__dataclass_fields__["backend"].metadata["choices"]
        if self.backend not in choices:
            raise ValueError(f"backend must be one of {', '.join(choices)}, got {self.backend!r}")
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")
        if self.max_replicas and self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas must be 0 or at least replicas ({self.replicas}), got {self.max_replicas}")
        if self.shard_frames < 0:
            raise ValueError(f"shard_frames must be 0 or more, got {self.shard_frames}")

    @property
    def most_replicas(self) -> int:
        """Replicas of one model at the most (what the front end lets through at once)."""
        return max(self.replicas, self.max_replicas)


OPTION_FIELDS = tuple(fields(BackendOptions))
