"""Library notices that say nothing to this project's users, dropped one message at a time."""

from __future__ import annotations

import logging


class _TorchvisionNotice(logging.Filter):
    """Drops transformers' notice that image processors fall back to PIL without torchvision.

    Importing diffusers' Stable Diffusion pipelines touches `CLIPImageProcessor` (the
    safety checker's input), and transformers 5 then prints two lines at every start.
    The PIL fallback is what this project wants (torchvision is not a dependency), so the
    notice is noise for the user; every other transformers message still shows.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


def drop_torchvision_notice() -> None:
    """Install the filter once (before diffusers is imported)."""
    notices = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(existing, _TorchvisionNotice) for existing in notices.filters):
        notices.addFilter(_TorchvisionNotice())
