"""The Keystone v3 subset at ``/identity``: what OpenStack clients need to get and use tokens.

- ``GET /identity`` (300, the versions list) and ``GET /identity/v3`` (the v3 version document):
  keystoneauth's discovery.
- ``POST /identity/v3/auth/tokens``: methods ``password`` (user by id, or by name + domain),
  ``token`` (re-scope; keeps the first token's expiry) and ``application_credential`` (by id, or
  name + user); scope ``project`` by id or by name + domain, or none (the user's default project,
  else unscoped); ``?nocatalog``. Answers 201 with ``X-Subject-Token`` and the token body with
  user, project, roles and the service catalog (``catalog_entries``).
- ``GET``/``HEAD``/``DELETE /identity/v3/auth/tokens`` with ``X-Subject-Token``: validate, check,
  revoke (the token's own user, or an admin).
- ``GET /identity/v3/auth/catalog``, ``/auth/projects``; ``GET /v3/projects`` (admin),
  ``/v3/projects/{id}`` (admin or a member of it), ``/v3/users/{id}`` and ``/v3/users/{id}/projects``
  (the user itself or an admin), ``/v3/domains/{id}``: enough for clients to turn names into ids.
- Application credentials: ``POST``/``GET /v3/users/{id}/application_credentials``,
  ``GET``/``DELETE …/{credential id}``.

Errors are Keystone's ``{"error": {"code", "title", "message"}}``. Source: Keystone API v3
reference (identity, "Authentication and token management", "Application credentials").
"""
