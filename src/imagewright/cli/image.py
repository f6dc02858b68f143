"""``imagewright image``: images in a cloud's image service, through clouds.yaml.

(The client-side ``upload/list/show/download/…`` commands join this group from their own
module; ``import`` lives in ``image_import``.)
"""

from __future__ import annotations

import click

from imagewright.cli import image_import


@click.group("image")
def command() -> None:
    """Images in a cloud's image service (ours or any OpenStack Glance), through clouds.yaml."""


command.add_command(image_import.command)
