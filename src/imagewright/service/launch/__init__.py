"""Launching instances from images: ``imagewright run``, ``ps``, ``stop``, ``rm``, ``console``, ``verify``.

Here the catalog (instance records, run state), the stores (registry images) and ``compute``
(QEMU) meet, so this lives on the service floor:

- ``images``: what an IMAGE_REF names, as a base image on disk: a file (admitted by the
  safety gate), or a registry image downloaded once into ``DATA_DIR/cache/images/`` and checked
  against its recorded checksums before anything reads it;
- ``instances``: the lifecycle (run, list with a live check of each QEMU process, stop, remove,
  console); ``supervisor``: the small process that starts and watches one instance's QEMU, so
  an instance outlives the command that started it (``--detach``, or a killed CLI);
- ``verify``: boot a fresh instance of an image and check from outside that it became what
  the cloud told it to be.
"""
