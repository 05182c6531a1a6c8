"""Would OpenVINO beat the compiled PyTorch UNet on this CPU? One model's UNet, three ways, one process.

    pip install openvino            # about 180 MB; not a dependency of the project
    python -m benchmarks.openvino_probe --model scenes

The bundled model's UNet at the engine's batch (16 rows: 8 frames with guidance): eager
PyTorch, compiled as the engine compiles it (`pipelines.compiling.compiled_module`), and
converted with `openvino.convert_model` and compiled for the CPU with the same thread
count. Alternating rounds, best of 5; prints milliseconds per call, the largest output
difference from eager, and what preparing each took.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.loading import BUNDLED_MODELS  # noqa: E402
from pipelines.compiling import compiled_module  # noqa: E402
from pipelines.openvino_unet import PlainUNet  # noqa: E402

ROWS = 16


def best_ms(call, rounds: int = 5, calls: int = 3) -> list[float]:
    out = []
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(calls):
            call()
        out.append(1000 * (time.perf_counter() - began) / calls)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="scenes", choices=sorted(BUNDLED_MODELS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        import openvino
    except ImportError:
        print("error: openvino is not installed (pip install openvino)", file=sys.stderr)
        return 2
    from diffusers import UNet2DConditionModel

    torch.set_num_threads(args.threads)
    unet = UNet2DConditionModel.from_pretrained(BUNDLED_MODELS[args.model] / "unet").eval()
    config = unet.config
    inputs = (torch.randn(ROWS, config.in_channels, config.sample_size, config.sample_size), torch.tensor(500.0),
              torch.randn(ROWS, 77, config.cross_attention_dim))
    prepared = {}
    with torch.no_grad():
        reference = unet(inputs[0], inputs[1], encoder_hidden_states=inputs[2]).sample
        began = time.perf_counter()
        inductor = compiled_module(unet, torch.device("cpu"))
        inductor(inputs[0], inputs[1], encoder_hidden_states=inputs[2])
        prepared["inductor"] = time.perf_counter() - began
        began = time.perf_counter()
        converted = openvino.convert_model(PlainUNet(unet), example_input=inputs)
        request = openvino.Core().compile_model(converted, "CPU", {"INFERENCE_NUM_THREADS": args.threads}) \
            .create_infer_request()
        prepared["openvino"] = time.perf_counter() - began
        calls = {
            "eager": lambda: unet(inputs[0], inputs[1], encoder_hidden_states=inputs[2]).sample,
            "inductor": lambda: inductor(inputs[0], inputs[1], encoder_hidden_states=inputs[2]).sample,
            "openvino": lambda: torch.from_numpy(request.infer([tensor.numpy() for tensor in inputs])[0]),
        }
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(5):  # alternating, so a drift of the machine's speed hits every variant alike
            for name, call in calls.items():
                times[name] += best_ms(call, rounds=1)
        for name, call in calls.items():
            difference = (call() - reference).abs().max().item()
            print(f"{args.model} {name:9s} {min(times[name]):7.1f} ms per {ROWS}-row call, max difference "
                  f"{difference:.1e}, prepared in {prepared.get(name, 0.0):.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
