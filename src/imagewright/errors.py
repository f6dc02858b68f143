"""One exception tree for everything imagewright reports to a user.

Every failure a user can cause (a hostile image, a missing program, a bad size) is an
``ImagewrightError`` whose message is one clear sentence. The CLI prints that sentence and
exits 1; anything that is *not* an ``ImagewrightError`` is a bug in imagewright.
"""

from __future__ import annotations


class ImagewrightError(Exception):
    """Base of every user-facing failure; ``str(err)`` is one sentence meant for a person."""


class ImageFormatError(ImagewrightError):
    """The bytes of an image do not form a valid (or supported) instance of their format."""


class UnsupportedFormatError(ImageFormatError):
    """The image is well formed, but in a format or variant imagewright does not handle."""


class UnsafeImageError(ImagewrightError):
    """The image is refused by the safety policy (backing files, external extents, bombs ...).

    ``reasons`` holds every reason found; the message names the first one.
    """

    def __init__(self, message: str, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons or (message,)


class ImageIOError(ImagewrightError):
    """An image or output file could not be read or written (missing, permission, disk full)."""


class OutputExistsError(ImagewrightError):
    """The output already exists and the caller did not ask to overwrite it."""


class InvalidArgumentError(ImagewrightError):
    """A value given by the user (a size, a format name, a network spec) cannot be used."""


class ProgramError(ImagewrightError):
    """An external program we drive failed; the message carries its most telling line."""


class ProgramNotFoundError(ProgramError):
    """An external program is not installed; the message names the Debian package to install."""


class GuestFilesystemError(ImagewrightError):
    """A file inside a guest filesystem could not be read or written."""


class GuestNotEditableError(GuestFilesystemError):
    """A guest that cannot be edited, found out before anything was written to it."""


class BuildError(ImagewrightError):
    """A bootable disk could not be built from the given source."""


class BootError(ImagewrightError):
    """A guest did not boot as expected (timeout, crash, marker never seen)."""


class InstanceError(ImagewrightError):
    """An instance cannot be started, reached, stopped or removed (``imagewright run`` and friends)."""


class ContextError(ImagewrightError):
    """Contextualization data or media could not be produced."""


class StoreError(ImageIOError):
    """A blob store cannot be configured, reached or written (bad --store spec, S3 refused, disk full).

    A kind of ``ImageIOError`` because a store is where image bytes are read and written: code
    that reports an unreadable image handles an unreadable blob the same way.
    """


class CatalogError(ImagewrightError):
    """The registry's catalog cannot be used (database unreachable, schema too old or too new)."""


class CloudError(ImagewrightError):
    """A cloud's image service (ours or any Glance) refused a request or could not be reached.

    What ``imagewright image …`` reports, with the service's own sentence where it gave one.
    """


class RequestError(ImagewrightError):
    """A request to the registry cannot be done as asked; ``status`` is its HTTP status.

    The registry's API answers with ``status`` and the sentence; the CLI prints the sentence.
    """

    status = 400


class NotAuthenticatedError(RequestError):
    """No valid credentials: a missing, expired or revoked token, a wrong password."""

    status = 401


class ForbiddenError(RequestError):
    """The caller is known but may not do this (a reader deleting, a non-owner sharing)."""

    status = 403


class NotFoundError(RequestError):
    """No such thing, or one the caller may not know of (the registry hides rather than refuses)."""

    status = 404


class ConflictError(RequestError):
    """The thing exists already, or is in a state that does not allow this (an active image's upload)."""

    status = 409


class SandboxUnavailableError(ImagewrightError):
    """The sandbox that programs reading untrusted images run in cannot start on this machine."""


def as_clause(err: BaseException) -> str:
    """An error's sentence as a clause inside another: no final period, a lower-case start
    unless the sentence starts with an acronym or a name ("QEMU ...", "ISO ...")."""
    text = str(err).strip().rstrip(".")
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
