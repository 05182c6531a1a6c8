"""Step-feature caching (DeepCache, Ma et al., CVPR 2024): an approximate, opt-in speed-up.

Neighbouring denoising steps compute nearly the same deep UNet features; only the
shallow path (the first down block, the last up block and their skip connection)
changes much. With `interval` N, every N-th UNet call runs the whole network and
stores the deep blocks' outputs; the N-1 calls after it run only the shallow path
and reuse the stored deep features (uniform 1:N, the paper's simplest schedule).

Built on diffusers' own hook registry (`diffusers.hooks.HookRegistry`, the mechanism
of its FasterCache and FirstBlockCache): each deep block gets a hook whose
`new_forward` either runs the block and keeps its output, or returns the kept one.
The UNet's own forward loop is untouched, so skip connections line up as usual.

The state is per calling thread, so batches split over lanes (pipelines/speed.py,
each lane always on its own thread) keep their own features.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from diffusers.hooks import HookRegistry, ModelHook

from pipelines.request import SPEED_MODES

HOOK_NAME = "latent_morph_deep_cache"
INTERVALS = (1, 2, 3, 4)  # 1 = off: every step runs the whole UNet
# the request's `speed` modes ("exact", "deepcache-N") and the interval each stands for
DEEP_CACHE_INTERVALS = {mode: 1 if mode == "exact" else int(mode.rsplit("-", 1)[1]) for mode in SPEED_MODES}


class DeepCacheState:
    """Which UNet call this thread is on, and the deep blocks' outputs of the last full call."""

    def __init__(self, interval: int) -> None:
        self.interval = interval
        self._local = threading.local()

    @property
    def _mine(self) -> Any:
        local = self._local
        if not hasattr(local, "calls"):
            local.calls, local.kept, local.shape = 0, {}, None
        return local

    def start_call(self, sample: torch.Tensor) -> None:
        """A UNet call begins: decide whether it runs the deep blocks."""
        mine = self._mine
        if mine.shape != tuple(sample.shape):  # another batch: nothing kept applies to it
            mine.calls, mine.kept, mine.shape = 0, {}, tuple(sample.shape)
        mine.reuse = mine.calls % self.interval != 0
        mine.calls += 1

    @property
    def reusing(self) -> bool:
        return bool(getattr(self._mine, "reuse", False))

    def kept(self, block: int) -> Any:
        return self._mine.kept[block]

    def keep(self, block: int, output: Any) -> None:
        self._mine.kept[block] = output


class _CallCounter(ModelHook):
    """On the UNet: counts its calls, so the deep blocks know whether this one is a full call."""

    def __init__(self, state: DeepCacheState) -> None:
        super().__init__()
        self.state = state

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        sample = args[0] if args else kwargs["sample"]
        self.state.start_call(sample)
        return args, kwargs


class _DeepBlock(ModelHook):
    """On a deep block: run it and keep the output on full calls; return the kept output otherwise."""

    def __init__(self, state: DeepCacheState, block: int) -> None:
        super().__init__()
        self.state = state
        self.block = block

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.state.reusing:
            return self.state.kept(self.block)
        output = self.fn_ref.original_forward(*args, **kwargs)
        self.state.keep(self.block, output)
        return output


def deep_blocks(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks below the shallowest level: every down block but the first, the mid block,
    every up block but the last."""
    return [*unet.down_blocks[1:], unet.mid_block, *unet.up_blocks[:-1]]


@contextmanager
def deep_feature_cache(unet: torch.nn.Module, interval: int) -> Iterator[DeepCacheState | None]:
    """Within the block, the UNet reuses its deep features for `interval - 1` of every `interval` calls.

    `interval` 1 installs nothing (the exact UNet). The hooks are removed on exit, whatever happens.
    """
    if interval not in INTERVALS:
        raise ValueError(f"deep cache interval must be one of {', '.join(map(str, INTERVALS))}, got {interval!r}")
    if interval == 1:
        yield None
        return
    state = DeepCacheState(interval)
    hooked = [(unet, _CallCounter(state))]
    hooked += [(block, _DeepBlock(state, index)) for index, block in enumerate(deep_blocks(unet))]
    try:
        for module, hook in hooked:
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, HOOK_NAME)
        yield state
    finally:
        for module, _hook in hooked:
            registry = getattr(module, "_diffusers_hook", None)
            if registry is not None:
                registry.remove_hook(HOOK_NAME, recurse=False)
                _drop_restored_forward(module)


def _drop_restored_forward(module: torch.nn.Module) -> None:
    """The registry restores `forward` as an instance attribute bound to the class's own; drop it,
    so the module is as it was (nothing shadows the class's method)."""
    forward = vars(module).get("forward")
    if getattr(forward, "__func__", None) is type(module).forward and getattr(forward, "__self__", None) is module:
        del module.forward
