"""The Image API v2 at ``/image``, with Glance's semantics (the Glance API reference is the spec).

- Versions document (``GET /image``: 300, v2.15 CURRENT … v2.0), ``/v2/schemas/{image,images,
  member,members}``, ``/v2/info/stores`` (the configured stores), ``/v2/info/import``.
- ``/v2/images``: create (201), list (filters ``name``/``id``/``status``/``disk_format``/
  ``container_format`` with ``in:``, ``visibility``, ``owner``, ``member_status``, ``tag``
  (repeatable), ``size_min``/``size_max``, ``created_at``/``updated_at`` with ``gt:`` … ``neq:``,
  ``os_hidden``, ``protected``, custom properties; ``sort_key``/``sort_dir`` or ``sort=k:d,…``;
  ``limit``/``marker`` with a ``next`` link), show, JSON-patch update
  (``application/openstack-images-v2.1-json-patch`` or v2.0; 415 otherwise; 403 for read-only and
  reserved attributes), delete (403 when ``protected``), deactivate/reactivate, tags.
- ``/v2/images/{id}/file``: upload (``upload.py``: streamed, hashed, judged by
  ``imagewright.upload_gate``) and download (``Content-MD5``, ``Range`` → 206/416, streamed from the store).
- ``/v2/images/{id}/members``: Glance's sharing, with ``catalog.image_policy``'s rules.

- ``/v2/metadefs``: the metadata definitions catalog (``metadefs.py``, schemas in
  ``metadef_schemas.py``, rules and the shipped default set in ``catalog.metadefs``).
- ``import_api``: interoperable import (``/v2/info/import``, ``PUT /stage``, ``POST /import``);
  ``task_api``: ``/v2/tasks``, ``/v2/images/{id}/tasks``, exports (``/actions/export`` and the
  signed ``/v2/exports/…`` downloads). The tasks themselves run in ``service.tasks``.
"""
