"""Images in the catalog: listing with Glance's filters, sorting and markers; members; uploads.

Listing follows ``glance/db/sqlalchemy/api.py`` (``_make_conditions_from_filters``,
``_select_images_query``, ``_paginate_query``): the caller's visibility as one SQL condition,
then filters, then keyset pagination on the sort keys with ``created_at`` and ``id`` appended so
that the order is total and a marker always means "strictly after this row". Nullable sort
columns are compared through ``COALESCE`` (as Glance does) *and* ordered by it, so SQLite and
PostgreSQL, which order NULLs differently, page the same way.

Uploads are claimed in the catalog, so that any number of server processes can take them:
``claim_upload`` turns ``queued`` into ``saving`` only if the row is still ``queued`` (one UPDATE
with the old status in its WHERE clause), recording the holder and a lease; ``renew_lease`` and
``finish_upload`` / ``release_upload`` act only while the holder still holds it. The sweep
(``expired_uploads``) finds ``saving`` rows whose lease ran out.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    exists,
    false,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session

from imagewright.catalog.accounts import utcnow
from imagewright.catalog.image_policy import image_not_found
from imagewright.catalog.models import Image, ImageMember, ImageProperty, ImageTag
from imagewright.catalog.tokens import AuthContext
from imagewright.errors import ConflictError, InvalidArgumentError, NotFoundError

#: Sort keys the API accepts (Glance's ``_available_sort_keys`` and a few more of its columns).
SORT_KEYS = (
    "name",
    "status",
    "container_format",
    "disk_format",
    "size",
    "virtual_size",
    "id",
    "created_at",
    "updated_at",
    "min_disk",
    "min_ram",
    "owner",
    "visibility",
)
#: Columns compared through COALESCE (NULL sorts as this value).
_NULL_AS: dict[str, Any] = {
    "name": "",
    "container_format": "",
    "disk_format": "",
    "owner": "",
    "size": 0,
    "virtual_size": 0,
}
#: Filters on columns with Glance's ``in:``/``eq:`` operators.
OPERATOR_FILTER_KEYS = ("name", "id", "status", "container_format", "disk_format")
#: Integer columns a filter may name (``min_disk=2``), compared for equality as Glance does.
INTEGER_FILTER_KEYS = ("min_disk", "min_ram")
TIME_FILTER_KEYS = ("created_at", "updated_at")
TIME_OPERATORS = ("gt", "gte", "lt", "lte", "eq", "neq")


@dataclass
class ImageQuery:
    """A parsed ``GET /v2/images`` request (the service parses, this runs)."""

    visibility: str | None = None
    member_status: str = "accepted"
    #: column -> list of accepted values (``in:`` gives several, a plain value one).
    equals: dict[str, list[Any]] = field(default_factory=dict)
    #: (column, operator, time) for created_at / updated_at.
    times: list[tuple[str, str, datetime]] = field(default_factory=list)
    owner: str | None = None
    tags: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    size_min: int | None = None
    size_max: int | None = None
    os_hidden: bool | None = False
    protected: bool | None = None
    checksum: str | None = None
    os_hash_value: str | None = None
    sort: list[tuple[str, str]] = field(default_factory=lambda: [("created_at", "desc")])
    marker: str | None = None
    limit: int = 25


def membership_of(session: Session, image_id: str, project_id: str | None) -> ImageMember | None:
    if project_id is None:
        return None
    return session.get(ImageMember, (image_id, project_id))


def get_image(session: Session, image_id: str) -> Image:
    """The image row, whoever asks; NotFoundError (Glance's sentence) if there is none."""
    if len(image_id) > 36:
        raise image_not_found(image_id)
    image = session.get(Image, image_id)
    if image is None:
        raise image_not_found(image_id)
    return image


def get_image_for_update(session: Session, image_id: str) -> Image:
    """As ``get_image``, locking the row on PostgreSQL until the transaction ends."""
    if len(image_id) > 36:
        raise image_not_found(image_id)
    image = session.scalars(select(Image).where(Image.id == image_id).with_for_update()).first()
    if image is None:
        raise image_not_found(image_id)
    return image


def _visible_condition(caller: AuthContext, query: ImageQuery) -> ColumnElement[bool]:
    project = caller.project_id
    if caller.is_admin:
        condition: ColumnElement[bool] = true()
    else:
        member_filter = [ImageMember.image_id == Image.id, ImageMember.member == (project or "")]
        if query.member_status != "all":
            member_filter.append(ImageMember.status == query.member_status)
        condition = or_(
            Image.visibility.in_(("public", "community")),
            Image.owner == project if project else false(),
            and_(Image.visibility == "shared", exists().where(*member_filter)),
        )
    if query.visibility is not None:
        if query.visibility != "all":
            condition = and_(condition, Image.visibility == query.visibility)
    elif project is None:
        condition = and_(condition, Image.visibility != "community")
    else:
        condition = and_(condition, or_(Image.owner == project, Image.visibility != "community"))
    return condition


def _sort_expression(key: str) -> ColumnElement[Any]:
    column = getattr(Image, key)
    if key in _NULL_AS:
        return func.coalesce(column, _NULL_AS[key])
    return column  # type: ignore[no-any-return]


def list_images(session: Session, caller: AuthContext, query: ImageQuery) -> list[Image]:
    conditions: list[ColumnElement[bool]] = [_visible_condition(caller, query)]
    for key, values in query.equals.items():
        column = getattr(Image, key)
        conditions.append(column.in_(values) if len(values) > 1 else column == values[0])
    for key, operator, moment in query.times:
        column = getattr(Image, key)
        conditions.append(
            {
                "gt": column > moment,
                "gte": column >= moment,
                "lt": column < moment,
                "lte": column <= moment,
                "eq": column == moment,
                "neq": column != moment,
            }[operator]
        )
    if query.owner is not None:
        conditions.append(Image.owner == query.owner)
    if query.size_min is not None:
        conditions.append(Image.size >= query.size_min)
    if query.size_max is not None:
        conditions.append(Image.size <= query.size_max)
    if query.os_hidden is not None:
        conditions.append(Image.os_hidden == query.os_hidden)
    if query.protected is not None:
        conditions.append(Image.protected == query.protected)
    if query.checksum is not None:
        conditions.append(Image.checksum == query.checksum)
    if query.os_hash_value is not None:
        conditions.append(Image.os_hash_value == query.os_hash_value)
    for tag in query.tags:
        conditions.append(exists().where(ImageTag.image_id == Image.id, ImageTag.value == tag))
    for name, value in query.properties.items():
        conditions.append(
            exists().where(
                ImageProperty.image_id == Image.id, ImageProperty.name == name, ImageProperty.value == value
            )
        )

    sort = list(query.sort)
    for key in ("created_at", "id"):
        if key not in [k for k, _ in sort]:
            sort.append((key, sort[-1][1] if sort else "desc"))

    if query.marker is not None:
        marker = session.get(Image, query.marker) if len(query.marker) <= 36 else None
        if marker is None or not session.scalar(
            select(func.count())
            .select_from(Image)
            .where(Image.id == marker.id, _visible_condition(caller, query))
        ):
            raise InvalidArgumentError(f"Invalid marker: image {query.marker} could not be found.")
        conditions.append(_after_marker(marker, sort))

    statement = select(Image).where(and_(*conditions))
    for key, direction in sort:
        expression = _sort_expression(key)
        statement = statement.order_by(expression.desc() if direction == "desc" else expression.asc())
    return list(session.scalars(statement.limit(query.limit)))


def _after_marker(marker: Image, sort: Sequence[tuple[str, str]]) -> ColumnElement[bool]:
    """(k1 > m1) or (k1 = m1 and k2 > m2) or … — with each key's own direction."""
    criteria: list[ColumnElement[bool]] = []
    for index, (key, direction) in enumerate(sort):
        clause: list[ColumnElement[bool]] = []
        for previous, _ in sort[:index]:
            clause.append(_sort_expression(previous) == _marker_value(marker, previous))
        expression = _sort_expression(key)
        value = _marker_value(marker, key)
        clause.append(expression < value if direction == "desc" else expression > value)
        criteria.append(and_(*clause))
    return or_(*criteria)


def _marker_value(marker: Image, key: str) -> Any:
    value = getattr(marker, key)
    return _NULL_AS.get(key) if value is None else value


# --- changes ------------------------------------------------------------------------------------


def new_image_id() -> str:
    return str(uuid.uuid4())


def create_image(
    session: Session, values: dict[str, Any], properties: dict[str, str], tags: Sequence[str]
) -> Image:
    image_id = values.pop("id", None) or new_image_id()
    if session.get(Image, image_id) is not None:
        raise ConflictError(f"An image with identifier {image_id} already exists.")
    now = utcnow()
    columns: dict[str, Any] = {
        "min_disk": 0,
        "min_ram": 0,
        "protected": False,
        "os_hidden": False,
        "visibility": "shared",
        **values,
    }
    image = Image(id=image_id, status="queued", created_at=now, updated_at=now, **columns)
    image.properties = [ImageProperty(name=name, value=value) for name, value in properties.items()]
    image.tags = [ImageTag(value=tag) for tag in dict.fromkeys(tags)]
    session.add(image)
    session.flush()
    return image


def save_image(
    session: Session, image: Image, values: dict[str, Any], properties: dict[str, str], tags: Sequence[str]
) -> Image:
    """Write a changed image: columns in ``values``, the complete property dict and tag list."""
    for key, value in values.items():
        setattr(image, key, value)
    current = {prop.name: prop for prop in image.properties}
    for name in list(current):
        if name not in properties:
            image.properties.remove(current[name])
    for name, value in properties.items():
        if name in current:
            current[name].value = value
        else:
            image.properties.append(ImageProperty(name=name, value=value))
    wanted = list(dict.fromkeys(tags))
    kept = {tag.value: tag for tag in image.tags}
    for value, tag in kept.items():
        if value not in wanted:
            image.tags.remove(tag)
    for value in wanted:
        if value not in kept:
            image.tags.append(ImageTag(value=value))
    image.updated_at = utcnow()
    session.flush()
    return image


def delete_image(session: Session, image: Image) -> tuple[str | None, str | None]:
    """Delete the row; returns (store id, location) of its blob for the caller to remove."""
    where = (image.store_id, image.location)
    session.delete(image)
    session.flush()
    return where


def add_tag(session: Session, image: Image, tag: str) -> None:
    if session.get(ImageTag, (image.id, tag)) is None:
        session.add(ImageTag(image_id=image.id, value=tag))
    image.updated_at = utcnow()
    session.flush()


def remove_tag(session: Session, image: Image, tag: str) -> None:
    row = session.get(ImageTag, (image.id, tag))
    if row is None:
        raise NotFoundError(f"Tag {tag} not found on image {image.id}.")
    session.delete(row)
    image.updated_at = utcnow()
    session.flush()


def count_tags(session: Session, image_id: str) -> int:
    return int(
        session.scalar(select(func.count()).select_from(ImageTag).where(ImageTag.image_id == image_id)) or 0
    )


# --- members ------------------------------------------------------------------------------------


def list_members(session: Session, image_id: str) -> list[ImageMember]:
    return list(
        session.scalars(
            select(ImageMember)
            .where(ImageMember.image_id == image_id)
            .order_by(ImageMember.created_at, ImageMember.member)
        )
    )


def add_member(session: Session, image: Image, member_id: str) -> ImageMember:
    if session.get(ImageMember, (image.id, member_id)) is not None:
        raise ConflictError(f"Member {member_id} is duplicated for image {image.id}.")
    now = utcnow()
    member = ImageMember(
        image_id=image.id, member=member_id, status="pending", created_at=now, updated_at=now
    )
    session.add(member)
    session.flush()
    return member


def get_member(session: Session, image: Image, member_id: str) -> ImageMember:
    member = session.get(ImageMember, (image.id, member_id))
    if member is None:
        raise NotFoundError(f"{member_id} not found in the member list of the image {image.id}.")
    return member


def count_members(session: Session, image_id: str) -> int:
    return int(
        session.scalar(select(func.count()).select_from(ImageMember).where(ImageMember.image_id == image_id))
        or 0
    )


# --- uploads ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadClaim:
    image_id: str
    holder: str
    store_id: str
    location: str
    disk_format: str
    container_format: str


def claim_upload(
    session: Session, image: Image, holder: str, store_id: str, location: str, lease: timedelta
) -> bool:
    """``queued`` → ``saving`` for ``holder``, if the image is still ``queued`` (atomic)."""
    now = utcnow()
    result = session.execute(
        update(Image)
        .where(Image.id == image.id, Image.status == "queued")
        .values(
            status="saving",
            store_id=store_id,
            location=location,
            upload_holder=holder,
            upload_expires_at=now + lease,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def renew_lease(
    session: Session, image_id: str, holder: str, lease: timedelta, *, status: str = "saving"
) -> bool:
    """Extend ``holder``'s lease of an upload (``saving``) or a stage (``uploading``)."""
    result = session.execute(
        update(Image)
        .where(Image.id == image_id, Image.status == status, Image.upload_holder == holder)
        .values(upload_expires_at=utcnow() + lease)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def finish_upload(
    session: Session,
    image_id: str,
    holder: str,
    values: dict[str, Any],
    properties: dict[str, str] | None = None,
) -> bool:
    """``saving`` → ``active`` with the computed size and hashes, if ``holder`` still holds it;
    ``properties`` (what the registry found in the data) replace any of the same names."""
    result = session.execute(
        update(Image)
        .where(Image.id == image_id, Image.status == "saving", Image.upload_holder == holder)
        .values(status="active", upload_holder=None, upload_expires_at=None, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        return False
    if properties:
        session.execute(
            delete(ImageProperty).where(
                ImageProperty.image_id == image_id, ImageProperty.name.in_(list(properties))
            )
        )
        session.add_all(
            ImageProperty(image_id=image_id, name=name, value=value) for name, value in properties.items()
        )
        session.flush()
    return True


def release_upload(session: Session, image_id: str, holder: str | None) -> bool:
    """``saving`` → ``queued`` with no data (Glance's ``_restore``); ``holder`` None = whoever held it."""
    conditions = [Image.id == image_id, Image.status == "saving"]
    if holder is not None:
        conditions.append(Image.upload_holder == holder)
    result = session.execute(
        update(Image)
        .where(*conditions)
        .values(
            status="queued",
            store_id=None,
            location=None,
            size=None,
            virtual_size=None,
            checksum=None,
            os_hash_algo=None,
            os_hash_value=None,
            upload_holder=None,
            upload_expires_at=None,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


@dataclass(frozen=True)
class StaleUpload:
    image_id: str
    holder: str | None
    store_id: str | None
    location: str | None
    expires_at: datetime | None


def saving_uploads(session: Session) -> list[StaleUpload]:
    rows = session.execute(
        select(Image.id, Image.upload_holder, Image.store_id, Image.location, Image.upload_expires_at).where(
            Image.status == "saving"
        )
    ).all()
    return [StaleUpload(*row) for row in rows]


def referenced_locations(session: Session) -> set[str]:
    return {
        location
        for location in session.scalars(select(Image.location).where(Image.location.is_not(None)))
        if location
    }


def delete_members_of(session: Session, image_id: str) -> None:
    session.execute(delete(ImageMember).where(ImageMember.image_id == image_id))


def fill_properties(image: Image, found: dict[str, str], *, ours: frozenset[str], limit: int) -> list[str]:
    """Add the ``found`` properties the image does not have yet (what its owner set wins); the
    names in ``ours`` (the registry's own, which no client may write) are set whatever they were.
    At most ``limit`` properties in all. Returns the names written."""
    current = {prop.name: prop for prop in image.properties}
    written = []
    for name, value in found.items():
        if name in current:
            if name in ours and current[name].value != value:
                current[name].value = value
                written.append(name)
            continue
        if len(current) >= limit:
            break
        current[name] = ImageProperty(name=name, value=value)
        image.properties.append(current[name])
        written.append(name)
    return written
