"""Tokens and application credentials: who is calling, on which project, with which roles.

A token is 32 random bytes (URL-safe text) handed to the client once; the catalog keeps only its
SHA-256, so reading the catalog yields no usable token. Tokens expire (``TOKEN_TTL``) and can be
revoked one by one; a token made from another (Keystone's ``token`` method) keeps the first one's
expiry, so re-scoping never extends a session. Everything a request needs is resolved from the
catalog on each use (``resolve``): no server keeps state that another server behind the same
load balancer would lack, and a removed user, project or role stops working at once.

Application credentials (Keystone's): a secret bound to one user and one project, with a subset
of the creator's roles there, optionally expiring; "restricted" ones (the default) cannot create
further application credentials.

Source: Keystone API v3 reference ("Authentication and token management", "Application
credentials"), Keystone ``token/provider.py`` (re-scoping keeps ``expires_at``, audit ids chain).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from imagewright.catalog.accounts import (
    assigned_role_names,
    hash_secret,
    new_id,
    roles_by_name,
    utcnow,
    verify_secret,
)
from imagewright.catalog.models import (
    ApplicationCredential,
    ApplicationCredentialRole,
    Domain,
    Project,
    Token,
    User,
)
from imagewright.errors import (
    ConflictError,
    ForbiddenError,
    InvalidArgumentError,
    NotAuthenticatedError,
    NotFoundError,
)

#: How long a token is valid (Keystone's default ``[token] expiration``).
TOKEN_TTL = timedelta(hours=1)

#: Keystone's sentence for every failed authentication: it does not say which part was wrong.
AUTH_FAILED = "The request you have made requires authentication."


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class NamedRef:
    id: str
    name: str


@dataclass(frozen=True)
class AuthContext:
    """A valid token, resolved: the caller of a request."""

    token_hash: str
    user: NamedRef
    user_domain: NamedRef
    project: NamedRef | None
    project_domain: NamedRef | None
    #: (role id, role name), implications included, strongest first.
    roles: tuple[NamedRef, ...]
    methods: tuple[str, ...]
    audit_id: str
    parent_audit_id: str | None
    issued_at: datetime
    expires_at: datetime
    application_credential: ApplicationCredentialRef | None = None

    @property
    def role_names(self) -> frozenset[str]:
        return frozenset(role.name for role in self.roles)

    @property
    def project_id(self) -> str | None:
        return self.project.id if self.project else None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.role_names

    def has_role(self, name: str) -> bool:
        return name in self.role_names


@dataclass(frozen=True)
class ApplicationCredentialRef:
    id: str
    name: str
    restricted: bool


# --- issuing ------------------------------------------------------------------------------------


def issue(
    session: Session,
    user: User,
    project: Project | None,
    methods: tuple[str, ...],
    *,
    application_credential: ApplicationCredential | None = None,
    expires_at: datetime | None = None,
    parent_audit_id: str | None = None,
) -> tuple[str, AuthContext]:
    """A new token for ``user`` scoped to ``project`` (None = unscoped); returns (token, context)."""
    if project is not None and not _roles_for(session, user, project, application_credential):
        raise NotAuthenticatedError(f"The user {user.name!r} has no role on the project {project.name!r}.")
    now = utcnow()
    expiry = min(expires_at or now + TOKEN_TTL, now + TOKEN_TTL)
    if application_credential is not None and application_credential.expires_at is not None:
        expiry = min(expiry, application_credential.expires_at)
    token = secrets.token_urlsafe(32)
    row = Token(
        token_hash=token_hash(token),
        user_id=user.id,
        project_id=project.id if project else None,
        application_credential_id=application_credential.id if application_credential else None,
        methods=",".join(methods),
        audit_id=secrets.token_urlsafe(16)[:22],
        parent_audit_id=parent_audit_id,
        issued_at=now,
        expires_at=expiry,
        revoked=False,
    )
    session.add(row)
    session.flush()
    return token, _context(session, row, user, project, application_credential)


def _roles_for(
    session: Session, user: User, project: Project, application_credential: ApplicationCredential | None
) -> list[NamedRef]:
    names = assigned_role_names(session, user.id, project.id)
    roles = roles_by_name(session)
    if application_credential is not None:
        # An application credential carries at most the roles it was given, and never more
        # than the user still holds on the project.
        allowed = {roles_by_id.name for roles_by_id in _app_cred_roles(session, application_credential)}
        names = [name for name in names if name in allowed]
    return [NamedRef(roles[name].id, name) for name in names if name in roles]


def _app_cred_roles(session: Session, credential: ApplicationCredential) -> list[NamedRef]:
    by_id = {role.id: role.name for role in roles_by_name(session).values()}
    return [NamedRef(link.role_id, by_id[link.role_id]) for link in credential.roles if link.role_id in by_id]


def _context(
    session: Session,
    row: Token,
    user: User,
    project: Project | None,
    credential: ApplicationCredential | None,
) -> AuthContext:
    user_domain = session.get(Domain, user.domain_id)
    assert user_domain is not None
    project_domain = session.get(Domain, project.domain_id) if project else None
    roles = tuple(_roles_for(session, user, project, credential)) if project else ()
    return AuthContext(
        token_hash=row.token_hash,
        user=NamedRef(user.id, user.name),
        user_domain=NamedRef(user_domain.id, user_domain.name),
        project=NamedRef(project.id, project.name) if project else None,
        project_domain=NamedRef(project_domain.id, project_domain.name) if project_domain else None,
        roles=roles,
        methods=tuple(row.methods.split(",")),
        audit_id=row.audit_id,
        parent_audit_id=row.parent_audit_id,
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        application_credential=ApplicationCredentialRef(
            credential.id, credential.name, not credential.unrestricted
        )
        if credential
        else None,
    )


# --- resolving ----------------------------------------------------------------------------------


def resolve(session: Session, token: str, *, not_found: str = AUTH_FAILED) -> AuthContext:
    """The caller a token stands for; NotAuthenticatedError if it is unknown, expired or revoked.

    ``not_found`` is the sentence for an invalid token (validation answers 404 with its own).
    """
    if not token or len(token) > 512:
        raise NotAuthenticatedError(not_found)
    digest = token_hash(token)
    row = session.get(Token, digest)
    # The lookup is by a hash of the secret, so its timing tells nothing; compare anyway.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise NotAuthenticatedError(not_found)
    if row.revoked or row.expires_at <= utcnow():
        raise NotAuthenticatedError(not_found)
    user = session.get(User, row.user_id)
    if user is None or not user.enabled:
        raise NotAuthenticatedError(not_found)
    project = session.get(Project, row.project_id) if row.project_id else None
    if row.project_id and (project is None or not project.enabled):
        raise NotAuthenticatedError(not_found)
    credential = (
        session.get(ApplicationCredential, row.application_credential_id)
        if row.application_credential_id
        else None
    )
    if row.application_credential_id and credential is None:
        raise NotAuthenticatedError(not_found)
    context = _context(session, row, user, project, credential)
    if project is not None and not context.roles:
        # The user lost every role on the project since the token was issued.
        raise NotAuthenticatedError(not_found)
    return context


def revoke(session: Session, context: AuthContext) -> None:
    session.execute(update(Token).where(Token.token_hash == context.token_hash).values(revoked=True))


def purge_expired(session: Session, now: datetime | None = None) -> int:
    """Remove tokens that expired (revoked ones too, once expired); returns how many."""
    result = session.execute(delete(Token).where(Token.expires_at <= (now or utcnow())))
    return int(getattr(result, "rowcount", 0) or 0)


# --- authenticating -----------------------------------------------------------------------------


def check_password(session: Session, user: User | None, password: str) -> User:
    """The user if ``password`` is theirs; one sentence for every failure, same work either way."""
    ok = verify_secret(user.password_hash if user else None, password)
    if user is None or not ok or not user.enabled:
        raise NotAuthenticatedError(AUTH_FAILED)
    return user


def check_application_credential(
    session: Session, *, credential_id: str | None, name: str | None, user: User | None, secret: str
) -> tuple[User, ApplicationCredential]:
    credential: ApplicationCredential | None = None
    if credential_id is not None:
        credential = session.get(ApplicationCredential, credential_id)
    elif name is not None and user is not None:
        credential = session.scalars(
            select(ApplicationCredential).where(
                ApplicationCredential.name == name, ApplicationCredential.user_id == user.id
            )
        ).first()
    ok = verify_secret(credential.secret_hash if credential else None, secret)
    if credential is None or not ok:
        raise NotAuthenticatedError(AUTH_FAILED)
    if credential.expires_at is not None and credential.expires_at <= utcnow():
        raise NotAuthenticatedError(AUTH_FAILED)
    owner = session.get(User, credential.user_id)
    if owner is None or not owner.enabled:
        raise NotAuthenticatedError(AUTH_FAILED)
    return owner, credential


# --- application credentials --------------------------------------------------------------------


def create_application_credential(
    session: Session,
    context: AuthContext,
    user_id: str,
    *,
    name: str,
    secret: str | None,
    description: str | None,
    expires_at: datetime | None,
    role_refs: list[dict[str, str]] | None,
    unrestricted: bool,
) -> tuple[ApplicationCredential, str]:
    """A new application credential of the calling user on the token's project; returns it and its secret."""
    if context.user.id != user_id:
        raise ForbiddenError("Application credentials can only be created for yourself.")
    if context.project is None:
        raise ForbiddenError("Creating an application credential needs a project-scoped token.")
    if context.application_credential is not None and context.application_credential.restricted:
        raise ForbiddenError("A restricted application credential cannot create another one.")
    if not name:
        raise InvalidArgumentError("An application credential needs a name.")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidArgumentError("The expiry of an application credential must lie in the future.")
    if session.scalars(
        select(ApplicationCredential).where(
            ApplicationCredential.user_id == user_id, ApplicationCredential.name == name
        )
    ).first():
        raise ConflictError(f"An application credential named {name!r} exists already.")
    held = {role.name: role for role in context.roles}
    held_by_id = {role.id: role for role in context.roles}
    chosen: list[NamedRef] = []
    for ref in role_refs or []:
        role = held.get(ref.get("name", "")) or held_by_id.get(ref.get("id", ""))
        if role is None:
            raise ForbiddenError(
                f"The role {ref.get('name') or ref.get('id')!r} is not one you hold on this project."
            )
        chosen.append(role)
    if not role_refs:
        chosen = list(context.roles)
    secret = secret or secrets.token_urlsafe(64)
    credential = ApplicationCredential(
        id=new_id(),
        name=name,
        description=description,
        user_id=user_id,
        project_id=context.project.id,
        secret_hash=hash_secret(secret),
        unrestricted=unrestricted,
        expires_at=expires_at,
        created_at=utcnow(),
    )
    credential.roles = [
        ApplicationCredentialRole(role_id=role.id) for role in {r.id: r for r in chosen}.values()
    ]
    session.add(credential)
    session.flush()
    return credential, secret


def list_application_credentials(
    session: Session, user_id: str, name: str | None = None
) -> list[ApplicationCredential]:
    query = select(ApplicationCredential).where(ApplicationCredential.user_id == user_id)
    if name is not None:
        query = query.where(or_(ApplicationCredential.name == name))
    return list(session.scalars(query.order_by(ApplicationCredential.name)))


def get_application_credential(session: Session, user_id: str, credential_id: str) -> ApplicationCredential:
    credential = session.get(ApplicationCredential, credential_id)
    if credential is None or credential.user_id != user_id:
        raise NotFoundError(f"Could not find application credential: {credential_id}.")
    return credential


def delete_application_credential(session: Session, user_id: str, credential_id: str) -> None:
    credential = get_application_credential(session, user_id, credential_id)
    session.delete(credential)
    session.flush()


def application_credential_roles(session: Session, credential: ApplicationCredential) -> list[NamedRef]:
    return _app_cred_roles(session, credential)


def find_user_for_auth(
    session: Session, *, user_id: str | None, name: str | None, domain_id: str | None
) -> User | None:
    """The user a request names (by id, or by name in a domain); None when there is none."""
    if user_id is not None:
        return session.get(User, user_id)
    if name is None or domain_id is None:
        return None
    return session.scalars(select(User).where(User.name == name, User.domain_id == domain_id)).first()
