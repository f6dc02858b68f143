"""Images and members as the Image API renders them (Glance's ``ResponseSerializer``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from imagewright.catalog.imports import image_stores
from imagewright.catalog.models import Image, ImageMember


def glance_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def image_view(image: Image, *, admin: bool = True) -> dict[str, Any]:
    """Custom properties first, then the attributes (later keys win, as in Glance's view).

    ``stores`` comes from the image's locations, which Glance hides from non-admins while the
    image is deactivated (its view then has no ``stores``); ``admin`` says who is looking.
    """
    view: dict[str, Any] = {prop.name: prop.value for prop in image.properties}
    view.update(
        {
            "name": image.name,
            "disk_format": image.disk_format,
            "container_format": image.container_format,
            "visibility": image.visibility,
            "size": image.size,
            "virtual_size": image.virtual_size,
            "status": image.status,
            "checksum": image.checksum,
            "protected": image.protected,
            "min_ram": image.min_ram,
            "min_disk": image.min_disk,
            "owner": image.owner,
            "os_hidden": image.os_hidden,
            "os_hash_algo": image.os_hash_algo,
            "os_hash_value": image.os_hash_value,
            "id": image.id,
            "created_at": glance_time(image.created_at),
            "updated_at": glance_time(image.updated_at),
            "tags": [tag.value for tag in image.tags],
            "self": f"/v2/images/{image.id}",
            "file": f"/v2/images/{image.id}/file",
            "schema": "/v2/schemas/image",
        }
    )
    if image.store_id and (image.status == "active" or (image.status == "deactivated" and admin)):
        view["stores"] = ",".join(image_stores(image))
    return view


def member_view(member: ImageMember) -> dict[str, Any]:
    return {
        "member_id": member.member,
        "image_id": member.image_id,
        "status": member.status,
        "created_at": glance_time(member.created_at),
        "updated_at": glance_time(member.updated_at),
        "schema": "/v2/schemas/member",
    }
