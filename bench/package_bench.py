"""bench/package: OVA, EC2 bundle and publish against the hand pipelines users type today.

1. ``package-ova``: a raw disk (4 GiB virtual, 1 GiB data), packaged and signed. Ours:
   ``imagewright package ova --sign``. Theirs::

       qemu-img convert -f raw -O vmdk -o subformat=streamOptimized disk.raw vm-disk1.vmdk
       sha256sum vm.ovf vm-disk1.vmdk  (as vm.mf);  openssl dgst -sha256 -sign key.pem vm.mf
       tar cf vm.ova vm.ovf vm.mf vm.cert vm-disk1.vmdk                     goal: <= 0.5x

2. ``package-bundle``: a 1 GiB raw image (all data). Ours: ``imagewright package bundle``.
   Theirs: ``tar cf - disk.img | tee >(sha1sum) | gzip | openssl enc -aes-128-cbc | split
   -b 10M`` and ``sha1sum`` of the parts                                     goal: <= 0.5x

3. ``package-publish``: the 4 GiB disk to qcow2, raw.gz, ova and bundle. Ours: ``imagewright
   publish --to qcow2,raw.gz,ova,bundle``. Theirs: the four separate imagewright commands
   (convert to qcow2, convert to raw.gz, package ova, package bundle)          goal: <= 0.4x
   Extra with ``BENCH_PUBLISH_HAND=1`` (once, not alternated: gzip -6 of the 4 GiB disk twice
   takes minutes): the same outputs the hand-run way (qemu-img, gzip, sha256sum, tar,
   openssl, split), ``ratio_vs_hand``.

The data is real machine code and text (shared libraries from /usr/lib, as bench/convert
uses). Each pair runs alternately; the best of ``BENCH_REPEAT`` (default 3) counts.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from bench.common import Comparison, cpu_seconds, report, run, timed
from bench.convert_bench import corpus
from imagewright.allocator import keep_freed_buffers
from imagewright.ops.convert import convert
from imagewright.package.bundle import BundleOptions, bundle_image
from imagewright.package.ova import OvaOptions, package_ova
from imagewright.package.ovf_descriptor import DiskFacts, MachineSpec, build_descriptor
from imagewright.package.publish import publish
from imagewright.package.signing import load_signer

MiB = 1 << 20
VIRTUAL = 4 << 30
DATA = 1 << 30
RUN = 64 * MiB
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
KEY, IV = "00112233445566778899aabbccddeeff", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def make_disk(path: Path, virtual: int, data: int) -> Path:
    """``virtual`` bytes holding ``data`` bytes of real binaries in 64 MiB runs spread over it."""
    with path.open("wb") as f:
        f.truncate(virtual)
        block = corpus(RUN)
        runs = data // RUN
        for index in range(runs):
            f.seek(index * (virtual // runs))
            f.write(block[index % 7 :] + block[: index % 7])
    return path


def make_keys(workdir: Path) -> dict[str, tuple[Path, Path]]:
    keys = {}
    for name in ("user", "cloud"):
        key, cert = workdir / f"{name}.key", workdir / f"{name}.pem"
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
             "-days", "3", "-subj", f"/CN={name}"])  # fmt: skip
        keys[name] = (key, cert)
    return keys


def shell(script: str, cwd: Path) -> None:
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, check=True, capture_output=True)


def best(
    ours: object, theirs: object, setup_ours: object = None, setup_theirs: object = None
) -> tuple[list[float], list[float]]:
    """Both sides ``REPEAT`` times, alternately; ``setup_*`` (untimed) runs before each."""
    times_ours: list[float] = []
    times_theirs: list[float] = []
    for _ in range(REPEAT):
        if callable(setup_theirs):
            setup_theirs()
        times_theirs.append(timed(theirs))  # type: ignore[arg-type]
        if callable(setup_ours):
            setup_ours()
        times_ours.append(timed(ours))  # type: ignore[arg-type]
    return times_ours, times_theirs


def bench_ova(workdir: Path, disk: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    signer = load_signer(*keys["user"])
    ours_out = workdir / "ours.ova"
    hand = workdir / "hand"
    hand.mkdir()
    # The descriptor a user would have written (sizes filled in: a text edit, not timed).
    (hand / "vm.ovf").write_text(
        build_descriptor(MachineSpec(name="vm"), DiskFacts("vm-disk1.vmdk", 0, VIRTUAL, 0))
    )
    key, cert = keys["user"]

    def ours() -> None:
        ours_out.unlink(missing_ok=True)
        package_ova(disk, ours_out, OvaOptions(MachineSpec(name="vm"), signer=signer))

    def theirs() -> None:
        shell(
            f"rm -f vm.ova vm-disk1.vmdk\n"
            f"qemu-img convert -f raw -O vmdk -o subformat=streamOptimized {disk} vm-disk1.vmdk\n"
            'sha256sum vm.ovf vm-disk1.vmdk | awk \'{print "SHA256(" $2 ")= " $1}\' > vm.mf\n'
            f"openssl dgst -sha256 -sign {key} -out vm.sig vm.mf\n"
            "{ printf 'SHA256(vm.mf)= %s\\n' \"$(xxd -p -c 1000 vm.sig)\"; cat "
            + str(cert)
            + "; } > vm.cert\n"
            "tar cf vm.ova vm.ovf vm.mf vm.cert vm-disk1.vmdk\n",
            hand,
        )

    times_ours, times_theirs = best(ours, theirs)
    report(
        Comparison(
            name="package-ova",
            ours_label="imagewright package ova --sign (4 GiB, 1 GiB data)",
            theirs_label="qemu-img streamOptimized; sha256sum; openssl; tar",
            ours_seconds=min(times_ours),
            theirs_seconds=min(times_theirs),
            goal_ratio=0.5,
            extra={
                "ova_mib_ours": ours_out.stat().st_size // MiB,
                "ova_mib_theirs": (hand / "vm.ova").stat().st_size // MiB,
                "runs_ours_s": [round(t, 2) for t in times_ours],
                "runs_theirs_s": [round(t, 2) for t in times_theirs],
            },
        )
    )


def bench_bundle(workdir: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    image = make_disk(workdir / "image.img", DATA, DATA)
    ours_dir, hand = workdir / "ours-bundle", workdir / "hand-bundle"
    ours_dir.mkdir()
    hand.mkdir()
    options = BundleOptions(
        user="123456789012", user_certificate=keys["user"][1], private_key=keys["user"][0],
        cloud_certificate=keys["cloud"][1],
    )  # fmt: skip

    def ours() -> None:
        for leftover in ours_dir.iterdir():
            leftover.unlink()
        bundle_image(image, ours_dir, options)

    def theirs() -> None:
        shell(
            "rm -f image.img.part.*\n"
            f"tar cf - -C {image.parent} {image.name} | tee >(sha1sum > tar.sha1) | gzip -c | "
            f"openssl enc -e -aes-128-cbc -K {KEY} -iv {IV} | "
            "split -b 10485760 -d -a 2 - image.img.part.\n"
            "sha1sum image.img.part.* > parts.sha1\n",
            hand,
        )

    times_ours, times_theirs = best(ours, theirs)
    report(
        Comparison(
            name="package-bundle",
            ours_label="imagewright package bundle (1 GiB of data)",
            theirs_label="tar | sha1sum | gzip | openssl enc | split; sha1sum",
            ours_seconds=min(times_ours),
            theirs_seconds=min(times_theirs),
            goal_ratio=0.5,
            extra={
                "parts_ours": len(list(ours_dir.glob("*.part.*"))),
                "parts_theirs": len(list(hand.glob("*.part.*"))),
                "runs_ours_s": [round(t, 2) for t in times_ours],
                "runs_theirs_s": [round(t, 2) for t in times_theirs],
            },
        )
    )
    image.unlink()


def bench_publish(workdir: Path, disk: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    ours_dir, separate = workdir / "published", workdir / "separate"
    ours_dir.mkdir()
    separate.mkdir()
    options = BundleOptions(
        user="123456789012", user_certificate=keys["user"][1], private_key=keys["user"][0],
        cloud_certificate=keys["cloud"][1],
    )  # fmt: skip
    ova = OvaOptions(MachineSpec(name="disk"))

    def clear(directory: Path) -> None:
        for leftover in directory.iterdir():
            leftover.unlink()

    cpu: dict[str, list[float]] = {"ours": [], "theirs": []}

    # The last run's outputs (2.5 GB) are removed before each run, untimed on both sides:
    # deleting them is not part of publishing.
    def ours() -> None:
        started = cpu_seconds()
        publish(disk, ours_dir, ("qcow2", "raw.gz", "ova", "bundle"), ova=ova, bundle=options)
        cpu["ours"].append(cpu_seconds() - started)

    def theirs() -> None:
        started = cpu_seconds()
        convert(disk, separate / "disk.qcow2")
        convert(disk, separate / "disk.raw.gz")
        package_ova(disk, separate / "disk.ova", ova)
        bundle_image(disk, separate, options)
        cpu["theirs"].append(cpu_seconds() - started)

    times_ours, times_theirs = best(
        ours, theirs, setup_ours=lambda: clear(ours_dir), setup_theirs=lambda: clear(separate)
    )
    extra: dict[str, object] = {}
    if os.environ.get("BENCH_PUBLISH_HAND") == "1":
        # Once (not alternated): the same four outputs and their checksums the hand-run way.
        hand_seconds = timed(lambda: publish_by_hand(workdir, disk))
        extra = {
            "hand_label": "qemu-img qcow2; gzip; qemu-img vmdk + sha256sum + tar; tar|gzip|openssl|split; "
            "sha1sum, sha256sum",
            "hand_s": round(hand_seconds, 2),
            "ratio_vs_hand": round(min(times_ours) / hand_seconds, 3),
        }
    report(
        Comparison(
            name="package-publish",
            ours_label="imagewright publish --to qcow2,raw.gz,ova,bundle",
            theirs_label="convert qcow2; convert raw.gz; package ova; package bundle",
            ours_seconds=min(times_ours),
            theirs_seconds=min(times_theirs),
            goal_ratio=0.4,
            extra={
                "runs_ours_s": [round(t, 2) for t in times_ours],
                "runs_theirs_s": [round(t, 2) for t in times_theirs],
                # CPU seconds (with children): the cost, whatever the load (wall time is not).
                "cpu_ours_s": [round(t, 2) for t in cpu["ours"]],
                "cpu_theirs_s": [round(t, 2) for t in cpu["theirs"]],
                "cpu_ratio": round(min(cpu["ours"]) / min(cpu["theirs"]), 3),
                "load_average": round(os.getloadavg()[0], 1),
                **extra,
            },
        )
    )


def publish_by_hand(workdir: Path, disk: Path) -> None:
    """What ``publish --to qcow2,raw.gz,ova,bundle`` makes, by hand (the OVA unsigned, as
    ``bench_publish`` asks for it; the descriptor written beforehand, untimed)."""
    hand = workdir / "publish-hand"
    if hand.exists():
        for leftover in hand.iterdir():
            leftover.unlink()
    hand.mkdir(exist_ok=True)
    (hand / "disk.ovf").write_text(
        build_descriptor(MachineSpec(name="disk"), DiskFacts("disk-disk1.vmdk", 0, VIRTUAL, 0))
    )
    shell(
        f"qemu-img convert -f raw -O qcow2 {disk} disk.qcow2\n"
        f"gzip -c {disk} > disk.raw.gz\n"
        f"qemu-img convert -f raw -O vmdk -o subformat=streamOptimized {disk} disk-disk1.vmdk\n"
        'sha256sum disk.ovf disk-disk1.vmdk | awk \'{print "SHA256(" $2 ")= " $1}\' > disk.mf\n'
        "tar cf disk.ova disk.ovf disk.mf disk-disk1.vmdk\n"
        f"tar cf - -C {disk.parent} {disk.name} | tee >(sha1sum > tar.sha1) | gzip -c | "
        f"openssl enc -e -aes-128-cbc -K {KEY} -iv {IV} | "
        "split -b 10485760 -d -a 2 - disk.img.part.\n"
        "sha1sum disk.img.part.* > parts.sha1\n"
        "sha256sum disk.qcow2 disk.raw.gz disk.ova disk.img.part.* > SHA256SUMS\n",
        hand,
    )


def main() -> None:
    # As the CLI's streaming verbs do (both sides run in this process).
    keep_freed_buffers()
    with tempfile.TemporaryDirectory(prefix="iw-bench-package-", dir="/var/tmp") as tmp:
        workdir = Path(tmp)
        keys = make_keys(workdir)
        disk = make_disk(workdir / "disk.raw", VIRTUAL, DATA)
        # BENCH_PACKAGE=publish (or ova, bundle; comma-separated) runs only those.
        only = set(filter(None, os.environ.get("BENCH_PACKAGE", "ova,bundle,publish").split(",")))
        if "ova" in only:
            bench_ova(workdir, disk, keys)
        if "bundle" in only:
            bench_bundle(workdir, keys)
        if "publish" in only:
            bench_publish(workdir, disk, keys)


if __name__ == "__main__":
    main()
