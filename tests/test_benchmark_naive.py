"""The benchmark's naive baseline (one pipeline call per frame) draws the engine's frames, lerp included."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.request import MorphRequest


@pytest.mark.parametrize("interp,noise_interp", [("lerp", "slerp"), ("slerp", "slerp"), ("lerp", "lerp")])
def test_naive_frames_equal_the_engines_frames(morpher, interp: str, noise_interp: str) -> None:
    from benchmarks.morph_bench import naive_frames

    request = MorphRequest(prompts=("a red circle", "a blue square", "a green star"), seeds=(1, 2, 3), frames=4,
                           steps=2, size=(32, 32), interp=interp, noise_interp=noise_interp, batch_size=1)
    engine = [np.asarray(frame.image) for frame in morpher.render(request).frames]
    naive = [np.asarray(image) for image in naive_frames(morpher.model.pipe, request)]
    assert len(naive) == len(engine) == 4
    assert all(np.array_equal(a, b) for a, b in zip(naive, engine))
    # the in-between frames really are mixed (a lerp that fell back to the prompt would differ)
    assert not np.array_equal(naive[1], naive[0]) and not np.array_equal(naive[1], naive[2])
