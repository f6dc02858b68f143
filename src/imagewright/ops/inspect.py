"""Transitional alias: inspection lives in ``imagewright.inspection`` (below ``guest/`` and ``ops/``)."""

from imagewright.inspection import ContainerReport, ImageReport, MemberReport, inspect_image, require_safe

__all__ = ["ContainerReport", "ImageReport", "MemberReport", "inspect_image", "require_safe"]
