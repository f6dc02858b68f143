"""``imagewright accounts``: the registry's projects and users, straight in its catalog.

Works against ``--data-dir`` (the catalog the data dir's ``serve`` uses) or ``--database URL``,
whether or not a server is running (the catalog is the only state).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from imagewright.cli.common import data_dir_option, database_option, json_option
from imagewright.cli.render import emit_json, stdout_console
from imagewright.errors import InvalidArgumentError


@click.group("accounts")
def command() -> None:
    """Manage the registry's projects and users (roles admin, member, reader per project)."""


@command.group("project")
def project() -> None:
    """Projects: what owns images."""


@project.command("add")
@click.argument("name")
@click.option("--description", default="", help="Free text.")
@data_dir_option
@database_option
@json_option
def project_add(
    name: str, description: str, data_dir: str | None, database: str | None, as_json: bool
) -> None:
    """Create the project NAME."""
    from imagewright.catalog import accounts
    from imagewright.service.datadir import open_catalog

    catalog = open_catalog(data_dir, database)
    with catalog.writing() as session:
        created = accounts.create_project(session, name, description)
        result = {"id": created.id, "name": created.name, "description": created.description}
    _report(as_json, result, f"project {name} created (id {result['id']})")


@project.command("list")
@data_dir_option
@database_option
@json_option
def project_list(data_dir: str | None, database: str | None, as_json: bool) -> None:
    """List the projects."""
    from imagewright.catalog import accounts
    from imagewright.service.datadir import open_catalog

    with open_catalog(data_dir, database).reading() as session:
        rows = [
            {"id": p.id, "name": p.name, "description": p.description, "enabled": p.enabled}
            for p in accounts.list_projects(session)
        ]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        stdout_console().print(
            f"{row['id']}  {row['name']}" + (f"  {row['description']}" if row["description"] else "")
        )


@project.command("remove")
@click.argument("project_ref", metavar="PROJECT")
@data_dir_option
@database_option
@json_option
def project_remove(project_ref: str, data_dir: str | None, database: str | None, as_json: bool) -> None:
    """Remove PROJECT (name or id) with its role assignments; refused while it owns images."""
    from imagewright.catalog import accounts
    from imagewright.service.datadir import open_catalog

    with open_catalog(data_dir, database).writing() as session:
        removed = accounts.remove_project(session, project_ref)
        result = {"id": removed.id, "name": removed.name}
    _report(as_json, result, f"project {result['name']} removed")


@command.group("user")
def user() -> None:
    """Users: who logs in, with a role on a project."""


@user.command("add")
@click.argument("name")
@click.option(
    "--project", "project_ref", required=True, help="The project (name or id) the user gets a role on."
)
@click.option(
    "--role",
    type=click.Choice(["admin", "member", "reader"]),
    default="member",
    show_default=True,
    help="The role.",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (first line).")
@data_dir_option
@database_option
@json_option
def user_add(
    name: str,
    project_ref: str,
    role: str,
    password_stdin: bool,
    data_dir: str | None,
    database: str | None,
    as_json: bool,
) -> None:
    """Create the user NAME with ROLE on PROJECT (or give an existing user that role)."""
    from imagewright.catalog import accounts
    from imagewright.errors import NotFoundError
    from imagewright.service.datadir import open_catalog

    password: str | None = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InvalidArgumentError("The password read from standard input is empty.")
    with open_catalog(data_dir, database).writing() as session:
        target = accounts.find_project(session, project_ref)
        try:
            existing = accounts.find_user(session, name)
        except NotFoundError:
            existing = None
        if existing is None:
            if password is None:
                raise InvalidArgumentError("A new user needs a password: pass it with --password-stdin.")
            created = accounts.create_user(session, name, password, project=target, role=role)
            action = "created"
        else:
            created = existing
            accounts.assign_role(session, existing, target, role)
            if password is not None:
                accounts.set_password(session, existing, password)
            action = "updated"
        result = {"id": created.id, "name": created.name, "project": target.name, "role": role}
    _report(as_json, result, f"user {name} {action}: role {role} on project {result['project']}")


@user.command("list")
@data_dir_option
@database_option
@json_option
def user_list(data_dir: str | None, database: str | None, as_json: bool) -> None:
    """List the users and their roles."""
    from imagewright.catalog import accounts
    from imagewright.service.datadir import open_catalog

    with open_catalog(data_dir, database).reading() as session:
        rows: list[dict[str, Any]] = [
            {
                "id": listing.user.id,
                "name": listing.user.name,
                "enabled": listing.user.enabled,
                "roles": [{"project": p, "role": r} for p, r in listing.assignments],
            }
            for listing in accounts.list_users(session)
        ]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        roles = ", ".join(f"{r['role']} on {r['project']}" for r in row["roles"]) or "no roles"
        stdout_console().print(f"{row['id']}  {row['name']}  ({roles})")


@user.command("remove")
@click.argument("user_ref", metavar="USER")
@data_dir_option
@database_option
@json_option
def user_remove(user_ref: str, data_dir: str | None, database: str | None, as_json: bool) -> None:
    """Remove USER (name or id), its tokens and application credentials."""
    from imagewright.catalog import accounts
    from imagewright.service.datadir import open_catalog

    with open_catalog(data_dir, database).writing() as session:
        removed = accounts.remove_user(session, user_ref)
        result = {"id": removed.id, "name": removed.name}
    _report(as_json, result, f"user {result['name']} removed")


def _report(as_json: bool, result: dict[str, Any], sentence: str) -> None:
    if as_json:
        emit_json(result)
    else:
        stdout_console().print(sentence)
