"""The client side of image registries: any Glance-compatible cloud, ours or a real OpenStack.

``imagewright image upload/list/show/download/delete/share/register-bundle`` and ``publish --to
registry`` (``publishing``) stand on this room; ``ec2`` keeps EC2 triplets linked as Glance
does. Authentication, the service catalog and endpoint discovery are openstacksdk's and
keystoneauth's (a ``clouds.yaml`` cloud, or the ``OS_*`` variables of an openrc); this room only
speaks the Image API v2 over the session they give.

- ``connect(cloud=None, clouds_file=None)`` → a ``Cloud`` (the openstacksdk connection).
- ``upload_image(cloud, path, name=…, …)`` → ``UploadResult``: the file is judged locally by
  the same gate the registry judges uploads with (``imagewright.upload_gate``: unsafe images and
  ones that are not what they would be declared as are refused before a byte is sent), its
  ``disk_format``/``container_format`` come from that inspection, ``convert_to`` converts it
  first with ``ops.convert`` (into a scratch directory, removed afterwards), the bytes are
  hashed (md5 + sha512) as they are sent, and the checksum the server then reports must be
  that one — else the image is deleted and the upload fails. A failed upload deletes the image
  it created: nothing is left behind.
- ``download_image`` (streamed, atomically written, md5 checked against the image's
  ``checksum`` and ``Content-MD5``), ``list_images``, ``find_image`` (id or unique name),
  ``delete_image``, ``share_image`` / ``unshare_image``.

Source: the Image API v2 reference (create, upload, download, members); Glance's multi-store
``X-Image-Meta-Store`` header for ``store``.
"""

from __future__ import annotations

from imagewright.registry.client import (
    Cloud,
    DownloadResult,
    UploadResult,
    connect,
    delete_image,
    download_image,
    find_image,
    list_images,
    share_image,
    unshare_image,
    upload_image,
)

__all__ = [
    "Cloud",
    "DownloadResult",
    "UploadResult",
    "connect",
    "delete_image",
    "download_image",
    "find_image",
    "list_images",
    "share_image",
    "unshare_image",
    "upload_image",
]
