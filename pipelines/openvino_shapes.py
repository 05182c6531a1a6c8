"""OpenVINO inference requests for the converted UNet, compiled for one input shape each.

The CPU plugin runs a graph compiled for fixed shapes faster than the same graph with
dynamic dimensions: measured on the 2-core CPU (AMD EPYC, avx2), one thread, best of 8,
ms per call (outputs within 2e-6 of the dynamic graph's):

    model     rows   dynamic   static
    shapes64    8       56        44
    shapes64   16      108        87
    shapes64   32      212       169
    scenes     16       80        65

A render calls the UNet with the same shapes at every step, and a morph with one or two
shapes (its batches and the last, shorter one), so each shape is compiled on first use
(about 0.5 s) and kept, the most recently used few at a time. A compiled copy costs about
120 MB for the bundled models' UNets whatever its rows, and a copy of the weights for big
ones, so UNets with weights over `STATIC_WEIGHTS_LIMIT` run the one dynamic graph instead.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

MAX_STATIC_SHAPES = 3  # a morph uses one or two; a third keeps a keyframe batch's shape too
STATIC_WEIGHTS_LIMIT = 256 * 2**20  # bytes: a real SD UNet (3.4 GB in float32) stays dynamic

Shapes = tuple[tuple[int, ...], ...]


def shapes_of(inputs: list[np.ndarray]) -> Shapes:
    return tuple(tuple(int(size) for size in array.shape) for array in inputs)


class CompiledShapes:
    """Infer requests for the shapes a call brings: `streams` requests per compiled shape.

    Not thread-safe: the caller runs one call at a time (the requests hold their buffers
    between start and wait).
    """

    def __init__(self, core: Any, model: Any, config: dict[str, Any], streams: int,
                 max_static: int = MAX_STATIC_SHAPES) -> None:
        self.core = core
        self.model = model  # the dynamic graph, reshaped per entry
        self.config = config
        self.streams = streams
        self.max_static = max_static
        self._static: OrderedDict[Shapes, list[Any]] = OrderedDict()
        self._dynamic: list[Any] | None = None
        self.compiles = 0  # how many graphs were compiled (evicted ones included)
        self.last_compiled: Any = None  # the latest compiled model (its properties are the config's)

    @property
    def static(self) -> bool:
        return self.max_static > 0

    def cached_shapes(self) -> list[Shapes]:
        return list(self._static)

    def requests_for(self, parts: list[Shapes]) -> list[Any]:
        """One infer request per part (at most `streams` parts), all taken before any starts, so a
        shape compiled for this call never evicts another this call is about to use."""
        if len(parts) > self.streams:
            raise ValueError(f"{len(parts)} parts for {self.streams} streams")
        if not self.static:
            if self._dynamic is None:
                self._dynamic = self._compile(self.model)
            return self._dynamic[: len(parts)]
        used: dict[Shapes, int] = {}
        taken = []
        for shapes in parts:
            index = used[shapes] = used.get(shapes, -1) + 1
            taken.append(self._requests(shapes)[index])
        return taken

    def _requests(self, shapes: Shapes) -> list[Any]:
        found = self._static.get(shapes)
        if found is not None:
            self._static.move_to_end(shapes)
            return found
        while len(self._static) >= self.max_static:
            self._static.popitem(last=False)  # freed once no request of it is referenced
        model = self.model.clone()
        model.reshape({port.any_name: list(shape) for port, shape in zip(model.inputs, shapes)})
        found = self._static[shapes] = self._compile(model)
        return found

    def _compile(self, model: Any) -> list[Any]:
        compiled = self.last_compiled = self.core.compile_model(model, "CPU", self.config)
        self.compiles += 1
        return [compiled.create_infer_request() for _ in range(self.streams)]


def run_parts(table: CompiledShapes, parts: list[list[np.ndarray]]) -> np.ndarray:
    """Each part on its own request, all started at once, outputs joined in order.

    Parts of one shape share that shape's compiled model (a request each); parts of two
    shapes run on two compiled models, whose streams must not be pinned to cores so that both
    can run at once (pinned, both first streams share the first core: measured 1.5x slower).
    """
    started = table.requests_for([shapes_of(part) for part in parts])
    for request, part in zip(started, parts):
        request.start_async(part, share_inputs=True)
    for request in started:
        request.wait()
    return np.concatenate([request.get_output_tensor(0).data for request in started])
