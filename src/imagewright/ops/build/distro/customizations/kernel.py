"""kernel: a kernel and its initrd, the ``cloud`` flavour unless ``--kernel generic``.

Debian's ``linux-image-cloud-amd64`` carries the drivers of virtual machines (virtio, Xen,
Hyper-V, ENA) and leaves out physical hardware: a smaller package and a faster initrd. The
initrd is built by ``initramfs-tools`` inside the target when the kernel package is configured
(with the initramfs customisation's ``MODULES=list`` and hook, written before: only the disk
drivers of cloud machines); ``build`` then boots the newest ``/boot/vmlinuz-*`` with its
``initrd.img-*``.
"""

from __future__ import annotations

from imagewright.ops.build.distro.customizations.base import Customization

CUSTOMIZATION = Customization(
    name="kernel",
    summary="a kernel (cloud flavour unless --kernel generic) and its initrd",
    why="the image boots from its own disk: it must carry the kernel it boots",
    packages=lambda plan: (plan.kernel_package, "initramfs-tools", "zstd"),
    done_elsewhere="installed the kernel package; initramfs-tools built its initrd",
)
