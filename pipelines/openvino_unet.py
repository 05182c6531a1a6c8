"""The UNet run by OpenVINO on the CPU: a stand-in for `pipe.unet` in plain SD 1.x renders.

    pip install openvino            # about 180 MB; not a dependency of the project

`openvino_unet(pipe.unet, threads)` converts the UNet once (`openvino.convert_model`),
keeps the converted graph on disk keyed by a hash of the UNet's config and weights,
and compiles it for the CPU in float32 (`INFERENCE_PRECISION_HINT`, so a CPU with
bf16 or f16 units does not silently round). The stock pipeline calls the result
where it would call the UNet; anything else it reads (`config`, `dtype`, ...) comes
from the torch UNet. One conversion takes every batch size, latent size and prompt
length: the graph is traced at a latent side that is not a multiple of the UNet's
upsampling factor, so it forwards each upsample's target size instead of doubling.

Streams, measured on the 2-core CPU (AMD EPYC, avx2; another benchmark on the same cores)
in one process, alternating rounds, best of 8, ms per UNet call at 16 x 16 latents:

    model     rows   1 request x 2 threads   rows split over 2 streams x 1 thread   eager torch
    shapes64   16            84                           63                           115
    shapes64   32           141                          121                           218
    scenes     16            68                           48                            90
    scenes     32           110                           85                           151

Streams won every case (and again, by 16-34%, in a second run under heavier load), so the
default is a stream a thread (`default_streams`; only 2 cores measured). Each call shape
then gets its own compiled graph (`pipelines/openvino_shapes.py`: fixed shapes run 20-25%
faster than the dynamic graph those figures are from). Preparing: 8-10 s (shapes64) and
8-28 s (scenes) with an empty cache (tracing and converting), 1.2 s in a new process from
the disk cache, the first call's shape compiled (0.5 s a shape). Outputs differ from the eager
UNet by at most 4e-6; frames of full renders (25 steps, guidance 7.5) are 89 dB PSNR or
more against eager renders (the bar is 40), some bit-equal.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.openvino_shapes import MAX_STATIC_SHAPES, STATIC_WEIGHTS_LIMIT, CompiledShapes, run_parts

PIP_HINT = "pip install openvino"
GRAPH_VERSION = "1"  # bump when the converted graph's inputs change, so stale files are not read
IR_NAME = "unet.xml"

# One conversion at a time in a process: torch.jit.trace (which convert_model runs) keeps global
# state, and two UNets traced at once from two threads (a service preparing both bundled models)
# fail its check that two traces of one model agree.
_CONVERT_LOCK = threading.Lock()

# One OpenVINO call at a time in a process: two models' requests started at once from two threads
# (a service's background preparation of both bundled models) hung the process. Each call already
# uses every core, so running them one after the other loses nothing.
_RUN_LOCK = threading.Lock()

# Measured (table above): a batch split over a stream a thread beat one request with all threads.
STREAMS_WIN = True


class OpenVINOUnavailable(RuntimeError):
    """OpenVINO is not installed; the message says how to install it."""

    def __init__(self) -> None:
        super().__init__(f"OpenVINO is not installed: {PIP_HINT} (about 180 MB; not a dependency of the project)")


def _openvino() -> Any:
    """The openvino module, imported on first use: it is optional, and takes a second to import."""
    try:
        import openvino
    except ImportError as error:
        raise OpenVINOUnavailable() from error
    return openvino


def openvino_available() -> bool:
    """Whether the optional OpenVINO runtime can be imported."""
    try:
        _openvino()
    except OpenVINOUnavailable:
        return False
    return True


def cache_dir() -> Path:
    """Converted UNets and OpenVINO's compiled blobs: beside the project's other caches."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "latent-morph" / "openvino"


def default_streams(threads: int) -> int:
    """Streams for `threads` CPU threads: the measured faster of one request and a stream a thread."""
    return max(1, threads) if STREAMS_WIN else 1


def unet_key(unet: torch.nn.Module, version: str) -> str:
    """A hash of everything the converted graph depends on: the UNet's config, attention processors
    and every weight's bytes (a statistic of the weights would let a fine-tune reuse a stale graph)."""
    digest = hashlib.sha256(f"{GRAPH_VERSION}|{version}|".encode())
    config = {name: value for name, value in dict(unet.config).items() if not name.startswith("_")}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    processors = getattr(unet, "attn_processors", {})
    digest.update(json.dumps({name: type(p).__name__ for name, p in processors.items()}, sort_keys=True).encode())
    for name, tensor in unet.state_dict().items():  # one tensor at a time: no copy of the whole model
        digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()[:32]


class PlainUNet(torch.nn.Module):
    """The UNet as a function of three tensors, which `openvino.convert_model` traces."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]


def convert(unet: torch.nn.Module) -> Any:
    """The UNet as an `openvino.Model` with dynamic rows, latent size and prompt length."""
    ov = _openvino()
    config = unet.config
    # Not a multiple of the upsampling factor: the trace keeps the branch that forwards each
    # upsample's size, which is also exact for aligned sizes (nearest, to exactly twice the side).
    side = 2 ** int(getattr(unet, "num_upsamplers", 3)) + 1
    example = (torch.zeros(2, config.in_channels, side, side), torch.full((2,), 500.0),
               torch.zeros(2, 77, config.cross_attention_dim))
    shapes = [("sample", [-1, config.in_channels, -1, -1]), ("timestep", [-1]),
              ("context", [-1, -1, config.cross_attention_dim])]
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns at every shape test it freezes; those it freezes here hold for any input
        # (channel asserts, the upsample-size branch chosen above, contiguity for large batches).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return ov.convert_model(PlainUNet(unet), example_input=example,
                                input=[(name, ov.PartialShape(shape), ov.Type.f32) for name, shape in shapes])


def is_converted(unet: torch.nn.Module, cache: Path | None = None) -> bool:
    """Whether an earlier process left this UNet's converted model on disk (preparing is then quick)."""
    return (((cache or cache_dir()) / unet_key(unet, _openvino().__version__)) / IR_NAME).is_file()


def converted_path(unet: torch.nn.Module, cache: Path | None = None) -> Path:
    """The converted UNet's IR file, converted and saved on first use (written atomically)."""
    ov = _openvino()
    folder = (cache or cache_dir()) / unet_key(unet, ov.__version__)
    if (folder / IR_NAME).is_file():
        return folder / IR_NAME
    with _CONVERT_LOCK:
        return _convert_and_save(unet, folder)


def _convert_and_save(unet: torch.nn.Module, folder: Path) -> Path:
    ov = _openvino()
    if (folder / IR_NAME).is_file():  # converted by another thread while this one waited
        return folder / IR_NAME
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        # compress_to_fp16 defaults to True: it would store the weights in half precision
        ov.save_model(convert(unet), staging / IR_NAME, compress_to_fp16=False)
        try:
            os.replace(staging, folder)
        except OSError:  # another process saved the same graph first: keep theirs
            if not (folder / IR_NAME).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / IR_NAME


def compile_config(threads: int, streams: int, cache: Path, static: bool = False) -> dict[str, Any]:
    """CPU plugin settings: float32 throughout, `streams` streams sharing `threads` threads."""
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": streams,
        "INFERENCE_PRECISION_HINT": "f32",  # the default on avx2, bf16 on CPUs with AMX or avx512_bf16
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,  # no int8 activations, whatever a later default
        # Two compiled shapes run at once in one call (see openvino_shapes.run_parts).
        "ENABLE_CPU_PINNING": False,
    }
    if not static:  # a shape's compile takes 0.5 s either way; its blobs would pile up on disk
        config["CACHE_DIR"] = str(cache / "compiled")  # OpenVINO's own cache of compiled blobs
    return config


def weights_bytes(unet: torch.nn.Module) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in unet.state_dict().values())


def _refuse(timestep_cond: Any, cross_attention_kwargs: Any, added_cond_kwargs: Any, extra: dict) -> None:
    """ValueError naming the first input the converted graph has no place for."""
    if timestep_cond is not None:
        raise ValueError("OpenVINOUNet takes no timestep_cond (a guidance-embedding UNet); use the torch UNet")
    if cross_attention_kwargs:
        raise ValueError(f"OpenVINOUNet takes no cross_attention_kwargs (got {sorted(cross_attention_kwargs)}); "
                         "attention processors run on the torch UNet")
    if added_cond_kwargs:
        raise ValueError(f"OpenVINOUNet takes no added_cond_kwargs (got {sorted(added_cond_kwargs)}: SDXL or "
                         "IP-Adapter inputs); use the torch UNet")
    for name, value in extra.items():
        if value is not None:
            raise ValueError(f"OpenVINOUNet takes no {name}; use the torch UNet")


def timesteps_for(timestep: Any, rows: int) -> np.ndarray:
    """One float32 timestep a row, from a 0-d tensor, a number or a tensor of one or `rows` values
    (the torch UNet casts them to float32 too, in its sinusoidal embedding)."""
    values = torch.as_tensor(timestep).detach().cpu().to(torch.float32).reshape(-1)
    if values.numel() == 1:
        values = values.expand(rows)
    if values.numel() != rows:
        raise ValueError(f"timestep has {values.numel()} values for {rows} rows; give one, or one a row")
    return values.contiguous().numpy()


def _array(tensor: torch.Tensor, name: str) -> np.ndarray:
    if not torch.is_tensor(tensor):
        raise ValueError(f"OpenVINOUNet needs {name} as a tensor, got {type(tensor).__name__}")
    return tensor.detach().cpu().to(torch.float32).contiguous().numpy()


class OpenVINOUNet:
    """Calls like `UNet2DConditionModel` for the stock pipeline; runs the converted graph.

    Attributes it does not define (`config`, `dtype`, `device`, `in_channels`, ...) are the
    torch UNet's, which stays the reference and the model for anything but plain calls.
    """

    def __init__(self, unet: torch.nn.Module, threads: int, streams: int | None = None,
                 cache: Path | None = None) -> None:
        ov = _openvino()
        self.unet = unet
        self.threads = max(1, int(threads))
        self.streams = default_streams(self.threads) if streams is None else max(1, int(streams))
        cache = cache or cache_dir()
        self.path = converted_path(unet, cache)
        core = ov.Core()
        static = weights_bytes(unet) <= STATIC_WEIGHTS_LIMIT
        self.shapes = CompiledShapes(core, core.read_model(str(self.path)),
                                     compile_config(self.threads, self.streams, cache, static),
                                     self.streams, MAX_STATIC_SHAPES if static else 0)

    def __getattr__(self, name: str) -> Any:
        unet = self.__dict__.get("unet")
        if unet is None:  # during copying or unpickling, before __init__ ran
            raise AttributeError(name)
        return getattr(unet, name)

    def __repr__(self) -> str:
        return f"OpenVINOUNet({type(self.unet).__name__}, threads={self.threads}, streams={self.streams})"

    def __call__(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, *,
                 timestep_cond: Any = None, cross_attention_kwargs: dict | None = None,
                 added_cond_kwargs: dict | None = None, return_dict: bool = True, **kwargs: Any) -> Any:
        """The noise prediction, as `(noise,)` with `return_dict=False`, else a `UNet2DConditionOutput`.

        Keyword-only after the three tensors: the torch UNet's fourth positional argument is
        `class_labels`, which this graph has no place for.
        """
        _refuse(timestep_cond, cross_attention_kwargs, added_cond_kwargs, kwargs)
        rows = int(sample.shape[0])
        if int(encoder_hidden_states.shape[0]) != rows:
            raise ValueError(f"encoder_hidden_states has {encoder_hidden_states.shape[0]} rows for {rows} samples")
        inputs = [_array(sample, "sample"), timesteps_for(timestep, rows),
                  _array(encoder_hidden_states, "encoder_hidden_states")]
        noise = torch.from_numpy(self._infer(inputs)).to(device=sample.device, dtype=sample.dtype)
        if not return_dict:
            return (noise,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=noise)

    def _infer(self, inputs: list[np.ndarray]) -> np.ndarray:
        """The rows split over the streams, run at once, then joined (one part: one request)."""
        rows = inputs[0].shape[0]
        parts = [[array[int(part[0]):int(part[-1]) + 1] for array in inputs]
                 for part in np.array_split(np.arange(rows), min(self.streams, rows))]
        with _RUN_LOCK:  # the infer requests hold their buffers between start and wait
            return run_parts(self.shapes, parts)


def openvino_unet(unet: torch.nn.Module, threads: int, streams: int | None = None) -> OpenVINOUNet:
    """The stand-in for a float32 CPU UNet; OpenVINOUnavailable when the package is missing."""
    _openvino()
    if unet.device.type != "cpu" or unet.dtype != torch.float32:
        raise ValueError(f"OpenVINOUNet runs a float32 CPU UNet, got {unet.dtype} on {unet.device}")
    return OpenVINOUNet(unet, threads, streams)
