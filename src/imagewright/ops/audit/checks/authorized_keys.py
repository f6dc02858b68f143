"""authorized-keys: keys that let someone log in, in ~/.ssh of root and every user under /home;
and private keys lying next to them. The report names each key by its type and comment.

Source: sshd(8) "AUTHORIZED_KEYS FILE FORMAT": optional options, then key type, base64 key,
comment. NOTE: the files are untrusted: at most ``MAX_KEYS_FILE`` bytes and ``MAX_KEYS`` keys
are read; comments are cut to 100 printable characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from imagewright.guest.bounded import GuestReader, lines
from imagewright.ops.audit.model import AuditCheck, Leak, Severity

MAX_KEYS_FILE = 1024 * 1024
MAX_KEYS = 10_000
KEY_FILES = ("authorized_keys", "authorized_keys2")
PRIVATE_KEYS = ("id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk")

_KEY_TYPE = re.compile(
    r"^(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp\d+|sk-\S+@openssh\.com|ssh-\S+-cert-v01@openssh\.com)$"
)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def homes(reader: GuestReader) -> list[str]:
    return ["/root", *reader.glob("/home/*")]


def describe_keys(text: str) -> list[str]:
    """``"type comment"`` of each key in an authorized_keys text (options skipped)."""
    keys: list[str] = []
    for line in lines(text, MAX_KEYS * 4):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        for index, word in enumerate(words[:-1]):
            if _KEY_TYPE.match(word):
                comment = _UNPRINTABLE.sub("?", " ".join(words[index + 2 :]))[:100]
                keys.append(f"{word} {comment or '(no comment)'}")
                break
        if len(keys) >= MAX_KEYS:
            break
    return keys


def run(reader: GuestReader) -> Iterator[Leak]:
    candidates = [f"{home}/.ssh/{name}" for home in homes(reader) for name in (*KEY_FILES, *PRIVATE_KEYS)]
    found = reader.guest.stat_many(candidates)
    for path in candidates:
        if found[path] is None:
            continue
        name = path.rpartition("/")[2]
        if name in PRIVATE_KEYS:
            yield Leak(path, "private SSH key of a user")
            continue
        text = reader.text(path, MAX_KEYS_FILE, "an authorized_keys file")
        if text is None:
            yield Leak(path, "authorized keys (not read)")
            continue
        keys = describe_keys(text)
        if keys:
            yield Leak(
                path, f"{len(keys)} authorized key{'s' if len(keys) > 1 else ''}: " + "; ".join(keys[:20])
            )


CHECK = AuditCheck(
    name="authorized-keys",
    severity=Severity.SECRET,
    summary="authorized_keys and private keys in ~/.ssh of root and users",
    fixed_by="ssh-userdir",
    run=run,
    lists=("/home",),
    in_homes=tuple(f".ssh/{name}" for name in (*KEY_FILES, *PRIVATE_KEYS)),
)
