"""ssh-keygen (Debian ``openssh-client``): a new key pair, for a verify run's fresh identity."""

from __future__ import annotations

import os
from pathlib import Path

from imagewright.programs.runner import run_program


def generate_ed25519(private_key: Path, comment: str) -> Path:
    """``ssh-keygen -q -t ed25519 -N '' -C COMMENT -f PATH``: writes PATH and PATH.pub; returns the latter."""
    run_program(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", os.fspath(private_key)],
        what="making an SSH key pair",
    )
    return private_key.with_name(private_key.name + ".pub")
