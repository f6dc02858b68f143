"""Whom verify logs in as over SSH, read from a real ext4 image (mke2fs -d) through the guest
file contract: cloud-init's default user from the image's cloud.cfg, then root; nobody when
the image has no SSH server (no ``ssh login`` check then)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.guest.images import flat_ext4, write

from imagewright.guest.session import open_guest
from imagewright.service.launch.verify import login_users

#: The shape of Debian 12's /etc/cloud/cloud.cfg around the default user.
DEBIAN_CLOUD_CFG = """\
users:
   - default
system_info:
   distro: debian
   default_user:
     name: debian
     lock_passwd: True
     gecos: Debian
   paths:
      cloud_dir: /var/lib/cloud/
"""


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"usr/sbin/sshd": "", "etc/cloud/cloud.cfg": DEBIAN_CLOUD_CFG}, ("debian", "root")),
        ({"usr/sbin/dropbear": ""}, ("root",)),
        ({"usr/sbin/sshd": "", "etc/cloud/cloud.cfg": "system_info:\n  distro: debian\n"}, ("root",)),
        ({"etc/cloud/cloud.cfg": DEBIAN_CLOUD_CFG}, ()),
    ],
    ids=["cloud-init-default-user", "dropbear-root", "cloud-init-without-default-user", "no-ssh-server"],
)
def test_login_users(files: dict[str, str], expected: tuple[str, ...], tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write(tree, "etc/hostname", "guest\n")
    for path, text in files.items():
        write(tree, path, text, mode=0o755)
    image = flat_ext4(tree, tmp_path / "guest.raw")
    with open_guest(image.path, format="raw") as guest:
        assert login_users(guest) == expected
