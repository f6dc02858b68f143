"""Accounts: domains, projects, users, their roles per project, and password hashing.

Roles are Keystone's three defaults with Keystone's implications (``admin`` implies ``member``
implies ``reader``; a token lists the implied roles too, as Keystone's does since Rocky), so a
policy asks for the weakest role it needs.

Passwords and application-credential secrets are hashed with argon2id (argon2-cffi). The
parameters are OWASP's minimum for argon2id (19 MiB, t=2, p=1) rather than argon2-cffi's default
(64 MiB, p=4): fifty clients logging in at once must not cost the server 3 GiB. A login for a user
that does not exist still verifies against a dummy hash, so the time taken does not tell whether
the name exists.

Source: Keystone ``assignment/core.py`` (role implications, "prior role" rules), OWASP Password
Storage Cheat Sheet (argon2id parameters).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from imagewright.catalog.models import (
    DEFAULT_DOMAIN_ID,
    Domain,
    Image,
    Instance,
    Project,
    Role,
    RoleAssignment,
    User,
)
from imagewright.errors import ConflictError, InvalidArgumentError, NotFoundError

#: Role names, strongest first; each implies the ones after it.
ROLE_NAMES: tuple[str, ...] = ("admin", "member", "reader")

ADMIN_PROJECT_NAME = "admin"
ADMIN_USER_NAME = "admin"

_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))

#: Names people type: no control characters, no leading/trailing blanks, at most 255 characters.
_MAX_NAME = 255


def utcnow() -> datetime:
    """Now in UTC without tzinfo: how every timestamp is stored."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_id() -> str:
    """A Keystone-shaped id: 32 hex digits."""
    return uuid.uuid4().hex


# --- secrets ------------------------------------------------------------------------------------


def hash_secret(secret: str) -> str:
    return _HASHER.hash(secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    """Whether ``secret`` matches ``stored_hash``; a missing hash still costs one verification."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, secret) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def implied_roles(names: Iterable[str]) -> list[str]:
    """The roles ``names`` grant, implications included, strongest first."""
    granted = set(names)
    result: list[str] = []
    for index, name in enumerate(ROLE_NAMES):
        if granted & set(ROLE_NAMES[: index + 1]):
            result.append(name)
    return result


def check_name(kind: str, name: str) -> str:
    if not name or name != name.strip() or len(name) > _MAX_NAME or any(ord(c) < 32 for c in name):
        raise InvalidArgumentError(
            f"{name!r} cannot name a {kind}: use 1 to {_MAX_NAME} printable characters without "
            "leading or trailing blanks."
        )
    return name


# --- lookups ------------------------------------------------------------------------------------


def get_domain(session: Session, *, domain_id: str | None = None, name: str | None = None) -> Domain:
    query = select(Domain)
    query = query.where(Domain.id == domain_id) if domain_id is not None else query.where(Domain.name == name)
    domain = session.scalars(query).first()
    if domain is None:
        raise NotFoundError(f"There is no domain {domain_id or name!r}.")
    return domain


def roles_by_name(session: Session) -> dict[str, Role]:
    return {role.name: role for role in session.scalars(select(Role))}


def find_project(session: Session, ref: str, domain_id: str = DEFAULT_DOMAIN_ID) -> Project:
    """A project by id, or by name in ``domain_id``; NotFoundError names what was looked for."""
    project = session.get(Project, ref)
    if project is None:
        project = session.scalars(
            select(Project).where(Project.name == ref, Project.domain_id == domain_id)
        ).first()
    if project is None:
        raise NotFoundError(f"There is no project {ref!r}.")
    return project


def find_user(session: Session, ref: str, domain_id: str = DEFAULT_DOMAIN_ID) -> User:
    user = session.get(User, ref)
    if user is None:
        user = session.scalars(select(User).where(User.name == ref, User.domain_id == domain_id)).first()
    if user is None:
        raise NotFoundError(f"There is no user {ref!r}.")
    return user


def assigned_role_names(session: Session, user_id: str, project_id: str) -> list[str]:
    """The roles ``user_id`` holds on ``project_id``, implied ones included."""
    names = session.scalars(
        select(Role.name)
        .join(RoleAssignment, RoleAssignment.role_id == Role.id)
        .where(RoleAssignment.user_id == user_id, RoleAssignment.project_id == project_id)
    ).all()
    return implied_roles(names)


def projects_of_user(session: Session, user_id: str) -> list[Project]:
    return list(
        session.scalars(
            select(Project)
            .join(RoleAssignment, RoleAssignment.project_id == Project.id)
            .where(RoleAssignment.user_id == user_id)
            .distinct()
            .order_by(Project.name)
        )
    )


# --- changes ------------------------------------------------------------------------------------


def create_project(
    session: Session, name: str, description: str = "", domain_id: str = DEFAULT_DOMAIN_ID
) -> Project:
    check_name("project", name)
    get_domain(session, domain_id=domain_id)
    if session.scalars(select(Project).where(Project.name == name, Project.domain_id == domain_id)).first():
        raise ConflictError(f"A project named {name!r} exists already.")
    project = Project(
        id=new_id(),
        name=name,
        domain_id=domain_id,
        description=description,
        enabled=True,
        created_at=utcnow(),
    )
    session.add(project)
    session.flush()
    return project


def remove_project(session: Session, ref: str) -> Project:
    """Remove a project with its role assignments and tokens; refused while it owns images or instances."""
    project = find_project(session, ref)
    instances = (
        session.scalar(select(func.count()).select_from(Instance).where(Instance.project_id == project.id))
        or 0
    )
    if instances:
        raise ConflictError(
            f"The project {project.name!r} still owns {instances} instance{'s' if instances != 1 else ''}; "
            "delete them first."
        )
    owned = session.scalar(select(func.count()).select_from(Image).where(Image.owner == project.id)) or 0
    if owned:
        raise ConflictError(
            f"The project {project.name!r} still owns {owned} image{'s' if owned != 1 else ''}; "
            "delete or hand them over first."
        )
    session.delete(project)
    session.flush()
    return project


def create_user(
    session: Session,
    name: str,
    password: str | None,
    *,
    project: Project | None = None,
    role: str | None = None,
    domain_id: str = DEFAULT_DOMAIN_ID,
) -> User:
    check_name("user", name)
    get_domain(session, domain_id=domain_id)
    if session.scalars(select(User).where(User.name == name, User.domain_id == domain_id)).first():
        raise ConflictError(f"A user named {name!r} exists already.")
    user = User(
        id=new_id(),
        name=name,
        domain_id=domain_id,
        password_hash=hash_secret(password) if password else None,
        default_project_id=project.id if project else None,
        enabled=True,
        created_at=utcnow(),
    )
    session.add(user)
    session.flush()
    if project is not None and role is not None:
        assign_role(session, user, project, role)
    return user


def assign_role(session: Session, user: User, project: Project, role_name: str) -> None:
    roles = roles_by_name(session)
    if role_name not in roles:
        raise InvalidArgumentError(f"{role_name!r} is not a role; the roles are {', '.join(ROLE_NAMES)}.")
    exists = session.get(RoleAssignment, (user.id, project.id, roles[role_name].id))
    if exists is None:
        session.add(RoleAssignment(user_id=user.id, project_id=project.id, role_id=roles[role_name].id))
        session.flush()


def set_password(session: Session, user: User, password: str) -> None:
    user.password_hash = hash_secret(password)
    session.flush()


def remove_user(session: Session, ref: str) -> User:
    user = find_user(session, ref)
    session.delete(user)
    session.flush()
    return user


@dataclass(frozen=True)
class UserListing:
    user: User
    #: (project name, role name) pairs as assigned (not implied).
    assignments: Sequence[tuple[str, str]]


def list_users(session: Session) -> list[UserListing]:
    rows = session.execute(
        select(RoleAssignment.user_id, Project.name, Role.name)
        .join(Project, Project.id == RoleAssignment.project_id)
        .join(Role, Role.id == RoleAssignment.role_id)
        .order_by(Project.name, Role.name)
    ).all()
    by_user: dict[str, list[tuple[str, str]]] = {}
    for user_id, project_name, role_name in rows:
        by_user.setdefault(user_id, []).append((project_name, role_name))
    return [
        UserListing(user, tuple(by_user.get(user.id, ())))
        for user in session.scalars(select(User).order_by(User.name))
    ]


def list_projects(session: Session, name: str | None = None) -> list[Project]:
    query = select(Project).order_by(Project.name)
    if name is not None:
        query = query.where(or_(Project.name == name))
    return list(session.scalars(query))


@dataclass(frozen=True)
class Bootstrap:
    """What the first start created (``password`` is None when the admin existed already)."""

    project: Project
    user: User
    password: str | None


def bootstrap(session: Session, admin_password: str | None) -> Bootstrap:
    """Create the ``admin`` project and user (role admin) unless they exist; idempotent.

    ``admin_password`` None means: generate one (returned once, never stored in the clear).
    """
    project = session.scalars(
        select(Project).where(Project.name == ADMIN_PROJECT_NAME, Project.domain_id == DEFAULT_DOMAIN_ID)
    ).first()
    if project is None:
        project = create_project(session, ADMIN_PROJECT_NAME, "The registry's administrators")
    user = session.scalars(
        select(User).where(User.name == ADMIN_USER_NAME, User.domain_id == DEFAULT_DOMAIN_ID)
    ).first()
    password: str | None = None
    if user is None:
        password = admin_password or generate_password()
        user = create_user(session, ADMIN_USER_NAME, password, project=project, role="admin")
    return Bootstrap(project, user, password)


def delete_role_assignments(session: Session, user: User, project: Project) -> None:
    session.execute(
        delete(RoleAssignment).where(
            RoleAssignment.user_id == user.id, RoleAssignment.project_id == project.id
        )
    )
