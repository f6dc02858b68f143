"""Routes of the Keystone v3 subset (see the package docstring): parse, call the catalog, render."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imagewright.catalog import accounts, tokens
from imagewright.catalog.models import (
    DEFAULT_DOMAIN_ID,
    ApplicationCredential,
    Domain,
    Project,
    User,
)
from imagewright.catalog.tokens import AUTH_FAILED, AuthContext
from imagewright.errors import (
    ForbiddenError,
    InvalidArgumentError,
    NotAuthenticatedError,
    NotFoundError,
    RequestError,
)
from imagewright.service.catalog_entries import render_catalog
from imagewright.service.http import (
    Registry,
    blocking,
    caller_of,
    guarded,
    http_exception_handlers,
    json_response,
    keystone_error,
    read_json,
    registry_of,
)

API_VERSION = "v3.14"
_route = guarded(keystone_error)


def keystone_time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def _version(base: str) -> dict[str, Any]:
    return {
        "id": API_VERSION,
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    }


@_route
async def versions(request: Request) -> Response:
    return json_response({"versions": {"values": [_version(registry_of(request).public_url)]}}, status=300)


@_route
async def version_v3(request: Request) -> Response:
    return json_response({"version": _version(registry_of(request).public_url)})


# --- authentication -----------------------------------------------------------------------------


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(f"Expecting to find {what} in the request body as an object.")
    return value


def _as_str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise RequestError(f"Expecting to find {what} as a non-empty string.")
    return value


def _domain_id(session: Session, ref: Any) -> str:
    """The id of a domain given as {"id": …} or {"name": …}; unknown domains fail auth."""
    ref = _as_dict(ref, "domain")
    try:
        if "id" in ref:
            return accounts.get_domain(session, domain_id=_as_str(ref["id"], "domain id")).id
        return accounts.get_domain(session, name=_as_str(ref.get("name"), "domain name")).id
    except NotFoundError:
        raise NotAuthenticatedError(AUTH_FAILED) from None


def _user_from_ref(session: Session, ref: Any) -> User | None:
    ref = _as_dict(ref, "user")
    if "id" in ref:
        return tokens.find_user_for_auth(
            session, user_id=_as_str(ref["id"], "user id"), name=None, domain_id=None
        )
    name = _as_str(ref.get("name"), "user name or id")
    if "domain" not in ref:
        raise RequestError("A user given by name needs its domain (user.domain.id or user.domain.name).")
    return tokens.find_user_for_auth(
        session, user_id=None, name=name, domain_id=_domain_id(session, ref["domain"])
    )


def _scope_project(session: Session, scope: Any, user: User) -> Project | None:
    project: Project | None
    if scope is None:
        if user.default_project_id:
            project = session.get(Project, user.default_project_id)
            if project is not None and accounts.assigned_role_names(session, user.id, project.id):
                return project
        return None
    if scope == "unscoped":
        return None
    scope = _as_dict(scope, "scope")
    if "project" in scope:
        ref = _as_dict(scope["project"], "scope.project")
        if "id" in ref:
            project = session.get(Project, _as_str(ref["id"], "project id"))
        else:
            name = _as_str(ref.get("name"), "project name or id")
            if "domain" not in ref:
                raise RequestError("A project given by name needs its domain (project.domain.id or .name).")
            domain_id = _domain_id(session, ref["domain"])
            try:
                project = accounts.find_project(session, name, domain_id)
            except NotFoundError:
                project = None
            if project is not None and project.name != name:
                project = None  # found by id while a name was given
        if project is None or not project.enabled:
            raise NotAuthenticatedError(f"The user {user.name!r} has no access to the project requested.")
        return project
    if "domain" in scope or "system" in scope:
        raise NotAuthenticatedError(
            "This registry issues project-scoped tokens only; ask for a project scope instead of a "
            "domain or system scope."
        )
    raise RequestError("The scope must name a project (scope.project.id or scope.project.name + domain).")


def _authenticate(session: Session, body: Any) -> tuple[str, AuthContext]:
    auth = _as_dict(_as_dict(body, "auth").get("auth"), "auth")
    identity = _as_dict(auth.get("identity"), "auth.identity")
    methods = identity.get("methods")
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
        raise RequestError("Expecting to find auth.identity.methods as a list of method names.")
    if len(methods) != 1 or methods[0] not in ("password", "token", "application_credential"):
        raise NotAuthenticatedError(
            "Attempted to authenticate with an unsupported method; use password, token or "
            "application_credential."
        )
    method = methods[0]
    scope = auth.get("scope")
    if method == "password":
        password = _as_dict(identity.get("password"), "auth.identity.password")
        user_ref = password.get("user")
        secret = _as_dict(user_ref, "password.user").get("password")
        if not isinstance(secret, str):
            raise RequestError("Expecting to find password.user.password as a string.")
        user = tokens.check_password(session, _user_from_ref(session, user_ref), secret)
        return tokens.issue(session, user, _scope_project(session, scope, user), ("password",))
    if method == "token":
        token_ref = _as_dict(identity.get("token"), "auth.identity.token")
        previous = tokens.resolve(session, _as_str(token_ref.get("id"), "token.id"))
        if previous.application_credential is not None:
            raise ForbiddenError("A token made from an application credential cannot be re-scoped.")
        same_user = session.get(User, previous.user.id)
        assert same_user is not None
        return tokens.issue(
            session,
            same_user,
            _scope_project(session, scope, same_user),
            ("token", *[m for m in previous.methods if m != "token"]),
            expires_at=previous.expires_at,
            parent_audit_id=previous.audit_id,
        )
    credential_ref = _as_dict(identity.get("application_credential"), "auth.identity.application_credential")
    if scope is not None:
        raise NotAuthenticatedError("An application credential carries its own scope; do not ask for one.")
    secret = _as_str(credential_ref.get("secret"), "application_credential.secret")
    if "id" in credential_ref:
        user, credential = tokens.check_application_credential(
            session,
            credential_id=_as_str(credential_ref["id"], "application_credential.id"),
            name=None,
            user=None,
            secret=secret,
        )
    else:
        owner = _user_from_ref(session, credential_ref.get("user"))
        user, credential = tokens.check_application_credential(
            session,
            credential_id=None,
            name=_as_str(credential_ref.get("name"), "application_credential.name or id"),
            user=owner,
            secret=secret,
        )
    project = session.get(Project, credential.project_id)
    if project is None or not project.enabled:
        raise NotAuthenticatedError(AUTH_FAILED)
    return tokens.issue(
        session, user, project, ("application_credential",), application_credential=credential
    )


def render_token(context: AuthContext, registry: Registry, *, with_catalog: bool) -> dict[str, Any]:
    token: dict[str, Any] = {
        "methods": list(context.methods),
        "user": {
            "id": context.user.id,
            "name": context.user.name,
            "domain": {"id": context.user_domain.id, "name": context.user_domain.name},
            "password_expires_at": None,
        },
        "audit_ids": [context.audit_id] + ([context.parent_audit_id] if context.parent_audit_id else []),
        "issued_at": keystone_time(context.issued_at),
        "expires_at": keystone_time(context.expires_at),
    }
    if context.project is not None and context.project_domain is not None:
        token["project"] = {
            "id": context.project.id,
            "name": context.project.name,
            "domain": {"id": context.project_domain.id, "name": context.project_domain.name},
        }
        token["is_domain"] = False
        token["roles"] = [{"id": role.id, "name": role.name} for role in context.roles]
        if with_catalog:
            token["catalog"] = render_catalog(registry.public_url, registry.config.region)
    if context.application_credential is not None:
        token["application_credential"] = {
            "id": context.application_credential.id,
            "name": context.application_credential.name,
            "restricted": context.application_credential.restricted,
        }
    return {"token": token}


@_route
async def issue_token(request: Request) -> Response:
    registry = registry_of(request)
    body = await read_json(request)

    def work() -> tuple[str, AuthContext]:
        with registry.catalog.writing() as session:
            return _authenticate(session, body)

    token, context = await blocking(work)
    with_catalog = "nocatalog" not in request.query_params
    return json_response(
        render_token(context, registry, with_catalog=with_catalog),
        status=201,
        headers={"X-Subject-Token": token},
    )


async def _subject(request: Request) -> tuple[AuthContext, AuthContext, str]:
    """(caller, subject, subject token) for validate/check/revoke; 403 unless self or admin."""
    caller = await caller_of(request)
    subject_token = request.headers.get("x-subject-token")
    if not subject_token:
        raise RequestError("This request needs the token to check in X-Subject-Token.")
    registry = registry_of(request)

    def work() -> AuthContext:
        with registry.catalog.reading() as session:
            return tokens.resolve(
                session, subject_token, not_found=f"Could not find token: {subject_token[:8]}…."
            )

    try:
        subject = await blocking(work)
    except NotAuthenticatedError as err:
        raise NotFoundError(str(err)) from None
    if not (caller.is_admin or caller.user.id == subject.user.id):
        raise ForbiddenError("You are not authorized to check another user's token.")
    return caller, subject, subject_token


@_route
async def validate_token(request: Request) -> Response:
    _caller, subject, subject_token = await _subject(request)
    if request.method == "HEAD":
        return Response(status_code=200, headers={"X-Subject-Token": subject_token})
    body = render_token(subject, registry_of(request), with_catalog="nocatalog" not in request.query_params)
    return json_response(body, headers={"X-Subject-Token": subject_token})


@_route
async def revoke_token(request: Request) -> Response:
    _caller, subject, _token = await _subject(request)
    registry = registry_of(request)

    def work() -> None:
        with registry.catalog.writing() as session:
            tokens.revoke(session, subject)

    await blocking(work)
    return Response(status_code=204)


@_route
async def auth_catalog(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    catalog = render_catalog(registry.public_url, registry.config.region) if caller.project else []
    return json_response({"catalog": catalog, "links": _links(request)})


# --- projects, users, domains -------------------------------------------------------------------


def _links(request: Request) -> dict[str, Any]:
    return {"self": str(request.url), "previous": None, "next": None}


def _project_view(project: Project, base: str) -> dict[str, Any]:
    return {
        "id": project.id,
        "name": project.name,
        "domain_id": project.domain_id,
        "description": project.description,
        "enabled": project.enabled,
        "is_domain": False,
        "parent_id": project.domain_id,
        "tags": [],
        "options": {},
        "links": {"self": f"{base}/identity/v3/projects/{project.id}"},
    }


def _user_view(user: User, base: str) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "domain_id": user.domain_id,
        "default_project_id": user.default_project_id,
        "enabled": user.enabled,
        "password_expires_at": None,
        "options": {},
        "links": {"self": f"{base}/identity/v3/users/{user.id}"},
    }


@_route
async def auth_projects(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)

    def work() -> list[dict[str, Any]]:
        with registry.catalog.reading() as session:
            return [
                _project_view(p, registry.public_url)
                for p in accounts.projects_of_user(session, caller.user.id)
            ]

    return json_response({"projects": await blocking(work), "links": _links(request)})


@_route
async def list_projects(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    name = request.query_params.get("name")

    def work() -> list[dict[str, Any]]:
        with registry.catalog.reading() as session:
            if caller.is_admin:
                projects = accounts.list_projects(session, name)
            else:
                # Keystone's identity:list_projects is admin-only; a member may still look up
                # its own projects by name (what clients do to turn a name into an id).
                projects = [
                    p
                    for p in accounts.projects_of_user(session, caller.user.id)
                    if name is None or p.name == name
                ]
                if name is None:
                    raise ForbiddenError("Listing all projects needs the admin role; use /v3/auth/projects.")
            return [_project_view(p, registry.public_url) for p in projects]

    return json_response({"projects": await blocking(work), "links": _links(request)})


@_route
async def show_project(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    project_id = request.path_params["project_id"]

    def work() -> dict[str, Any]:
        with registry.catalog.reading() as session:
            project = session.get(Project, project_id)
            if project is None:
                raise NotFoundError(f"Could not find project: {project_id}.")
            mine = any(p.id == project.id for p in accounts.projects_of_user(session, caller.user.id))
            if not (caller.is_admin or mine):
                raise ForbiddenError("You are not authorized to see this project.")
            return _project_view(project, registry.public_url)

    return json_response({"project": await blocking(work)})


def _require_self_or_admin(caller: AuthContext, user_id: str) -> None:
    if not (caller.is_admin or caller.user.id == user_id):
        raise ForbiddenError("You are not authorized to act on another user.")


@_route
async def show_user(request: Request) -> Response:
    caller = await caller_of(request)
    user_id = request.path_params["user_id"]
    _require_self_or_admin(caller, user_id)
    registry = registry_of(request)

    def work() -> dict[str, Any]:
        with registry.catalog.reading() as session:
            user = session.get(User, user_id)
            if user is None:
                raise NotFoundError(f"Could not find user: {user_id}.")
            return _user_view(user, registry.public_url)

    return json_response({"user": await blocking(work)})


@_route
async def user_projects(request: Request) -> Response:
    caller = await caller_of(request)
    user_id = request.path_params["user_id"]
    _require_self_or_admin(caller, user_id)
    registry = registry_of(request)

    def work() -> list[dict[str, Any]]:
        with registry.catalog.reading() as session:
            return [
                _project_view(p, registry.public_url) for p in accounts.projects_of_user(session, user_id)
            ]

    return json_response({"projects": await blocking(work), "links": _links(request)})


@_route
async def show_domain(request: Request) -> Response:
    await caller_of(request)
    registry = registry_of(request)
    domain_id = request.path_params["domain_id"]

    def work() -> dict[str, Any]:
        with registry.catalog.reading() as session:
            domain = session.get(Domain, domain_id)
            if domain is None:
                raise NotFoundError(f"Could not find domain: {domain_id}.")
            return {
                "id": domain.id,
                "name": domain.name,
                "enabled": domain.enabled,
                "description": "The default domain" if domain.id == DEFAULT_DOMAIN_ID else "",
                "links": {"self": f"{registry.public_url}/identity/v3/domains/{domain.id}"},
            }

    return json_response({"domain": await blocking(work)})


# --- application credentials --------------------------------------------------------------------


def _credential_view(
    session: Session, credential: ApplicationCredential, base: str, secret: str | None = None
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": credential.id,
        "name": credential.name,
        "description": credential.description,
        "user_id": credential.user_id,
        "project_id": credential.project_id,
        "expires_at": keystone_time(credential.expires_at),
        "unrestricted": credential.unrestricted,
        "roles": [
            {"id": role.id, "name": role.name, "domain_id": None}
            for role in tokens.application_credential_roles(session, credential)
        ],
        "access_rules": [],
        "links": {
            "self": f"{base}/identity/v3/users/{credential.user_id}/application_credentials/{credential.id}"
        },
    }
    if secret is not None:
        view["secret"] = secret
    return view


def _parse_expiry(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentError("expires_at must be an ISO 8601 time, like 2030-01-31T00:00:00Z.")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgumentError(f"{value!r} is not an ISO 8601 time, like 2030-01-31T00:00:00Z.") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


@_route
async def create_credential(request: Request) -> Response:
    caller = await caller_of(request)
    user_id = request.path_params["user_id"]
    body = _as_dict(await read_json(request), "body")
    spec = _as_dict(body.get("application_credential"), "application_credential")
    roles = spec.get("roles")
    if roles is not None and (not isinstance(roles, list) or not all(isinstance(r, dict) for r in roles)):
        raise RequestError('application_credential.roles must be a list of {"name": …} or {"id": …} objects.')
    secret = spec.get("secret")
    if secret is not None and not isinstance(secret, str):
        raise RequestError("application_credential.secret must be a string.")
    description = spec.get("description")
    registry = registry_of(request)

    def work() -> dict[str, Any]:
        with registry.catalog.writing() as session:
            credential, plain = tokens.create_application_credential(
                session,
                caller,
                user_id,
                name=_as_str(spec.get("name"), "application_credential.name"),
                secret=secret,
                description=description if isinstance(description, str) else None,
                expires_at=_parse_expiry(spec.get("expires_at")),
                role_refs=roles,
                unrestricted=bool(spec.get("unrestricted", False)),
            )
            return _credential_view(session, credential, registry.public_url, plain)

    return json_response({"application_credential": await blocking(work)}, status=201)


@_route
async def list_credentials(request: Request) -> Response:
    caller = await caller_of(request)
    user_id = request.path_params["user_id"]
    _require_self_or_admin(caller, user_id)
    registry = registry_of(request)
    name = request.query_params.get("name")

    def work() -> list[dict[str, Any]]:
        with registry.catalog.reading() as session:
            return [
                _credential_view(session, c, registry.public_url)
                for c in tokens.list_application_credentials(session, user_id, name)
            ]

    return json_response({"application_credentials": await blocking(work), "links": _links(request)})


@_route
async def show_credential(request: Request) -> Response:
    caller = await caller_of(request)
    user_id = request.path_params["user_id"]
    _require_self_or_admin(caller, user_id)
    registry = registry_of(request)

    def work() -> dict[str, Any]:
        with registry.catalog.reading() as session:
            credential = tokens.get_application_credential(
                session, user_id, request.path_params["credential_id"]
            )
            return _credential_view(session, credential, registry.public_url)

    return json_response({"application_credential": await blocking(work)})


@_route
async def delete_credential(request: Request) -> Response:
    caller = await caller_of(request)
    user_id = request.path_params["user_id"]
    _require_self_or_admin(caller, user_id)
    registry = registry_of(request)

    def work() -> None:
        with registry.catalog.writing() as session:
            tokens.delete_application_credential(session, user_id, request.path_params["credential_id"])

    await blocking(work)
    return Response(status_code=204)


def build_identity_app() -> Starlette:
    routes = [
        Route("/", versions, methods=["GET"]),
        Route("/v3", version_v3, methods=["GET"]),
        Route("/v3/", version_v3, methods=["GET"]),
        Route("/v3/auth/tokens", issue_token, methods=["POST"]),
        Route("/v3/auth/tokens", validate_token, methods=["GET", "HEAD"]),
        Route("/v3/auth/tokens", revoke_token, methods=["DELETE"]),
        Route("/v3/auth/catalog", auth_catalog, methods=["GET"]),
        Route("/v3/auth/projects", auth_projects, methods=["GET"]),
        Route("/v3/projects", list_projects, methods=["GET"]),
        Route("/v3/projects/{project_id}", show_project, methods=["GET"]),
        Route("/v3/users/{user_id}", show_user, methods=["GET"]),
        Route("/v3/users/{user_id}/projects", user_projects, methods=["GET"]),
        Route("/v3/domains/{domain_id}", show_domain, methods=["GET"]),
        Route("/v3/users/{user_id}/application_credentials", create_credential, methods=["POST"]),
        Route("/v3/users/{user_id}/application_credentials", list_credentials, methods=["GET"]),
        Route(
            "/v3/users/{user_id}/application_credentials/{credential_id}", show_credential, methods=["GET"]
        ),
        Route(
            "/v3/users/{user_id}/application_credentials/{credential_id}",
            delete_credential,
            methods=["DELETE"],
        ),
    ]
    return Starlette(routes=routes, exception_handlers=http_exception_handlers(keystone_error))
