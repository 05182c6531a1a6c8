"""The body of a lane worker process (pipelines/lanes.py): a UNet copy that answers row chunks.

Kept apart from lanes.py so a spawned worker imports only what it needs (torch, the UNet's
class, and the compile settings), not the engine.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

PARENT_CHECK_S = 1.0


def serve(connection: Any, unet_class: type, config: dict, state: dict, compile: bool, threads: int,
          warm_rows: tuple[int, ...]) -> None:
    """Build the UNet, say ready, then answer ("run", sample, timestep, context | None) until told to stop."""
    exit_with_parent(os.getppid())
    try:
        unet, network = _build(unet_class, config, state, compile, threads, warm_rows)
    except Exception as error:  # reported to the caller, which renders without lanes
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
    connection.send(("ready", os.getpid()))
    _answer(connection, unet, network)


def exit_with_parent(parent: int) -> threading.Thread:
    """End this process once `parent` is gone. A killed parent never sends the stop message, and a
    worker still compiling (minutes) would not notice its closed pipe until it tried to answer; an
    orphan is handed to another parent, so its parent pid changes."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    watcher = threading.Thread(target=watch, name="lane-parent-watch", daemon=True)
    watcher.start()
    return watcher


def _build(unet_class: type, config: dict, state: dict, compile: bool, threads: int,
           warm_rows: tuple[int, ...]) -> tuple[Any, Any]:
    """The eager UNet, and what answers calls: the UNet itself, or compiled and warmed up."""
    import torch

    torch.set_num_threads(threads)
    unet = unet_class.from_config(config).eval()
    unet.load_state_dict(state)
    if not compile:
        return unet, unet
    from pipelines.compiling import compiled_module, sample_inputs_of

    network = compiled_module(unet, torch.device("cpu"))
    with torch.no_grad():
        for rows in warm_rows:  # compile here, not on the caller's first split call
            network(*sample_inputs_of(unet, rows))
    return unet, network


def _answer(connection: Any, unet: Any, network: Any) -> None:
    import torch

    context = None
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):  # the caller went away
            return
        if message is None:
            return
        _, sample, timestep, sent_context = message
        if sent_context is not None:
            context = torch.from_numpy(sent_context)
        try:
            noise = _noise(unet, network, torch.from_numpy(sample), torch.from_numpy(timestep), context)
            connection.send(("ok", noise.numpy()))
        except Exception as error:  # the caller computes these rows itself
            connection.send(("error", f"{type(error).__name__}: {error}"))


def _noise(unet: Any, network: Any, sample: Any, timestep: Any, context: Any) -> Any:
    """The compiled network's answer, or the eager UNet's when the compiled one would compile again
    for these inputs: the caller waits on every lane, so a lane never stops for minutes to compile."""
    import torch
    from torch._dynamo import config as dynamo_config
    from torch._dynamo.exc import RecompileError

    with torch.no_grad():
        if network is not unet:
            try:
                with dynamo_config.patch(error_on_recompile=True):
                    return network(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]
            except RecompileError:
                pass
        return unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]
