"""The small interface every context medium builder offers, and what builders share."""

from __future__ import annotations

from typing import Protocol

from imagewright.errors import InvalidArgumentError
from imagewright.metadata.instance import InstanceDescription
from imagewright.metadata.layout import Filesystem, MediumLayout


class ContextMediumBuilder(Protocol):
    """Turns an instance description into the file tree of one kind of medium."""

    #: The name users pick with ``--kind``.
    kind: str
    #: The volume label guests look for (blkid ``LABEL``).
    label: str
    filesystem: Filesystem
    #: A few words for reports ("cloud-init NoCloud seed").
    description: str

    def layout(self, instance: InstanceDescription) -> MediumLayout:
        """The medium's content; raises InvalidArgumentError for what this kind cannot carry."""
        ...


def refuse_unsupported(
    instance: InstanceDescription, kind: str, *, extra_hosts: bool, init_script: bool
) -> None:
    """Refuse inputs a kind has no place for, rather than dropping them silently."""
    if instance.extra_hosts and not extra_hosts:
        raise InvalidArgumentError(f"Extra hosts are only carried by the wakame medium, not by {kind}.")
    if instance.init_script is not None and not init_script:
        raise InvalidArgumentError(f"An init script is only carried by the opennebula medium, not by {kind}.")
