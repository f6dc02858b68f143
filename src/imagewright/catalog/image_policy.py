"""Who may see, download, change and share which image — Glance's rules, in one place.

The API, the web console and the EC2 API (later) all ask here, so the same caller gets the same
answer through every door. A *caller* is a resolved token (``tokens.AuthContext``): a project and
the roles held on it (``admin`` ⊃ ``member`` ⊃ ``reader``). Anonymous requests never get here
(401 first).

The rules, as Glance's default policy (secure RBAC, ``glance/policies/base.py`` and
``glance/policies/image.py``) together with its database and authorization layers
(``glance/db/utils.py:is_image_visible``, ``glance/db/sqlalchemy/api.py:_select_images_query``,
``glance/api/authorization.py``, ``glance/api/v2/policy.py:ImageAPIPolicy._enforce``) and the
Image API v2 reference ("Image visibility", "Sharing"):

Rules (the caller's project P; "owner's member" = the member role on the owning project):

- show: admin; P owns it; public or community; shared and P is a member (any status). Else 404.
- list, default: public, P's own, shared with P and *accepted*; community only when P owns it
  or ``visibility=community`` is asked; an admin sees all but other projects' community images.
  ``member_status=S`` lists shared images where P's membership is S (``all``: any status).
- download: as show, plus the member role; deactivated: admin only (403); no data yet: 204.
- create: the member role, owner = P (an admin may name any owner); ``public`` needs admin.
- update, delete, upload, deactivate, reactivate: admin or owner's member; 404 when not
  visible, else 403. Visibility ``public``: admin only; ``community``: admin or owner's member.
  A ``protected`` image cannot be deleted by anyone (403).
- add member: admin or owner's member, only on ``shared`` images (403); 409 if already one.
- list members: admin or owner: all; a member: only its own entry; public image: 403.
- show member: admin or owner: any; a member: only itself; else 404.
- change member status: admin or that member itself with the member role; else 403.
- remove member: admin or owner's member; else 403 (404 when the image is not visible).

Glance answers 404 rather than 403 wherever the caller may not know the image exists
(``ImageAPIPolicy._enforce``: "raise NotFound ... to avoid exposing images the user can not
see"), and 403 where the image is visible but the action is not allowed.

Deactivation: Glance's default policy (``deactivate``/``reactivate``: ADMIN_OR_PROJECT_MEMBER)
lets the owner's members deactivate their own image, as implemented here; older Glance releases
allowed admins only.
"""

from __future__ import annotations

from imagewright.catalog.models import Image, ImageMember
from imagewright.catalog.tokens import AuthContext
from imagewright.errors import ForbiddenError, NotFoundError

VISIBILITIES = ("public", "community", "shared", "private")
MEMBER_STATUSES = ("pending", "accepted", "rejected")


def image_not_found(image_id: str) -> NotFoundError:
    return NotFoundError(f"No image found with ID {image_id}.")


def is_owner(caller: AuthContext, image: Image) -> bool:
    return caller.project_id is not None and image.owner == caller.project_id


def can_see(caller: AuthContext, image: Image, membership: ImageMember | None) -> bool:
    """Glance's ``is_image_visible`` (any membership status counts for showing)."""
    if caller.is_admin:
        return True
    if not caller.has_role("reader"):
        return False
    if image.visibility in ("public", "community") or is_owner(caller, image):
        return True
    return image.visibility == "shared" and membership is not None


def require_visible(caller: AuthContext, image: Image, membership: ImageMember | None) -> None:
    if not can_see(caller, image, membership):
        raise image_not_found(image.id)


def require_owner_member(
    caller: AuthContext, image: Image, membership: ImageMember | None, doing: str
) -> None:
    """Admin, or the member role on the owner project; 404 when invisible, 403 when only visible."""
    require_visible(caller, image, membership)
    if caller.is_admin or (caller.has_role("member") and is_owner(caller, image)):
        return
    if is_owner(caller, image):
        raise ForbiddenError(f"You need the member role on the owner project to {doing} this image.")
    raise ForbiddenError(f"You are not permitted to {doing} an image owned by another project.")


def require_download(caller: AuthContext, image: Image, membership: ImageMember | None) -> None:
    require_visible(caller, image, membership)
    if not (caller.is_admin or caller.has_role("member")):
        raise ForbiddenError("You need the member role to download image data.")
    if image.status == "deactivated" and not caller.is_admin:
        raise ForbiddenError("The requested image has been deactivated; image data download is forbidden.")


def require_create(caller: AuthContext, owner: str | None, visibility: str) -> None:
    if not caller.is_admin:
        if not caller.has_role("member"):
            raise ForbiddenError("You need the member role to create images.")
        if owner is not None and owner != caller.project_id:
            raise ForbiddenError(f"You are not permitted to create images owned by '{owner}'.")
    require_visibility_allowed(caller, visibility)


def require_visibility_allowed(caller: AuthContext, visibility: str) -> None:
    if visibility == "public" and not caller.is_admin:
        raise ForbiddenError("Only an admin may make an image public (the publicize_image policy).")


def require_set_owner(caller: AuthContext, image: Image, owner: str | None) -> None:
    if owner != image.owner and not caller.is_admin:
        raise ForbiddenError("Only an admin may change the owner of an image.")


# --- members ------------------------------------------------------------------------------------


def require_add_member(caller: AuthContext, image: Image, membership: ImageMember | None) -> None:
    require_visible(caller, image, membership)
    if not (caller.is_admin or (caller.has_role("member") and is_owner(caller, image))):
        raise ForbiddenError("You are not permitted to create image members for the image.")
    if image.visibility != "shared":
        raise ForbiddenError("Only shared images have members.")


def visible_members(caller: AuthContext, image: Image, members: list[ImageMember]) -> list[ImageMember]:
    """What ``GET /v2/images/{id}/members`` shows this caller (after ``require_visible``)."""
    if image.visibility != "shared":
        # Glance 33 (image_members.py): members of an image that is not shared are not listed.
        raise ForbiddenError(f"Only shared images have members; image {image.id} is {image.visibility}.")
    if caller.is_admin or is_owner(caller, image):
        return members
    own = [member for member in members if member.member == caller.project_id]
    if not own:
        raise ForbiddenError(f"You cannot get image member for {image.id}.")
    return own


def may_show_member(caller: AuthContext, image: Image, member_id: str) -> bool:
    return caller.is_admin or is_owner(caller, image) or member_id == caller.project_id


def require_change_member_status(caller: AuthContext, image: Image, member_id: str) -> None:
    if caller.is_admin:
        return
    if member_id != caller.project_id:
        raise ForbiddenError("Only the member itself may accept or reject an image shared with it.")
    if not caller.has_role("member"):
        raise ForbiddenError("You need the member role to accept or reject a shared image.")


def require_remove_member(caller: AuthContext, image: Image) -> None:
    if not (caller.is_admin or (caller.has_role("member") and is_owner(caller, image))):
        raise ForbiddenError(f"You cannot delete image member for {image.id}.")
