"""imagewright: virtual machine images for private IaaS clouds, checked end to end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from imagewright.ops.inspect import ImageReport


def inspect(path: str, **kwargs: Any) -> ImageReport:
    """Inspect an image file; see ``imagewright.ops.inspect.inspect_image``."""
    from imagewright.ops.inspect import inspect_image

    return inspect_image(path, **kwargs)


__all__ = ["__version__", "inspect"]
