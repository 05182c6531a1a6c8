"""The example prompts under the page: what the first model offered knows how to draw."""

from __future__ import annotations

# Prompts the bundled shapes model knows (coloured shapes on plain backgrounds).
SHAPE_EXAMPLES = {
    "chain": [
        ["a red circle", "a blue square"],
        ["a small yellow star", "a large purple triangle"],
        ["a large green square", "a small orange circle"],
        ["a white triangle on a black background", "a black star on a white background"],
        ["a large red circle", "a large blue circle"],
    ],
    "grid": [["a red circle", "a blue circle", "a red square", "a blue square"]],
    "direction": [["a red circle", "a red square", "a blue square"]],
}
# Landscapes: what the bundled scenes model knows, and what any real model draws.
SCENE_EXAMPLES = {
    "chain": [
        ["a sunset over the ocean", "a sunrise over mountains"],
        ["a foggy forest at dawn", "green hills under a clear sky at noon"],
        ["the desert at noon", "snowy mountains at night"],
        ["a city skyline at dusk", "a calm lake in the morning"],
    ],
    "grid": [["the ocean at noon", "the ocean at night", "the desert at noon", "the desert at night"]],
    "direction": [["a forest at noon", "hills at noon", "hills at sunset"]],
}
EXAMPLES = {"bundled:shapes64": SHAPE_EXAMPLES, "tiny": SHAPE_EXAMPLES}


def examples_for(model_name: str) -> dict[str, list[list[str]]]:
    """The examples under the page for the first model offered."""
    return EXAMPLES.get(model_name, SCENE_EXAMPLES)
