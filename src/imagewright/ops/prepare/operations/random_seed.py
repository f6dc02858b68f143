"""random-seed: remove the saved random seed, so clones do not start with the same entropy.

systemd-random-seed and Debian's urandom script load the seed at boot and write a new one;
a missing seed is normal on first boot.
"""

from __future__ import annotations

from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation

SEEDS = ("/var/lib/systemd/random-seed", "/var/lib/urandom/random-seed", "/var/lib/random-seed")


def run(ctx: PrepareContext) -> None:
    found = ctx.guest.stat_many(SEEDS)
    ctx.delete_many([path for path in SEEDS if (info := found[path]) is not None and info.is_file])


OPERATION = Operation(
    name="random-seed",
    default=True,
    summary="Remove the saved random seed (/var/lib/systemd/random-seed, ...)",
    why="every clone would credit the same seed to its random pool at first boot",
    run=run,
)
