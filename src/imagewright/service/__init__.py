"""The network services ``imagewright serve`` runs: one ASGI app, one sub-app per API.

- ``app``: the composed Starlette app and uvicorn's factory; ``serving``: start-up (catalog,
  accounts, stores, client files, sweep) and the uvicorn call; ``config``: the one value object
  every worker gets; ``datadir``: the data dir's files.
- ``identity/``: the Keystone v3 subset at ``/identity``.
- ``images/``: the Image API v2 (Glance) at ``/image``: routes, schemas, views, the upload path
  and the gate (imagewright.upload_gate on every uploaded byte).
- ``http``: what the APIs share (the per-worker ``Registry``, JSON, errors, the caller);
  ``sweep``: interrupted uploads and orphan blobs; ``leases``: upload holders.

Routes stay thin: parse, call ``catalog`` / ``stores`` / the gate, render. Rules about who may do
what live in ``catalog.image_policy`` so every API applies the same ones.
"""
