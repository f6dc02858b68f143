"""imagewright: virtual machine images for private IaaS clouds, checked end to end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from imagewright.inspection import ImageReport


def inspect(path: str, **kwargs: Any) -> ImageReport:
    """Inspect an image file; see ``imagewright.inspection.inspect_image``."""
    from imagewright.inspection import inspect_image

    return inspect_image(path, **kwargs)


__all__ = ["__version__", "inspect"]
