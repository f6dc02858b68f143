"""Background work of the registry: import and export tasks, and the workers that run them.

- ``environment``: what a task runner needs (catalog, stores, scratch space, lease) — built by
  ``imagewright serve`` for its embedded threads and by ``imagewright worker``.
- ``runner``: ``run_task`` (claim → heartbeat → run → finish, one conditional UPDATE each) and
  the ``EmbeddedRunner`` threads inside every server process; ``run``: the ``TaskRun`` a
  handler is given (progress, heartbeat, whether to stop), apart so the handlers never
  import the runner that dispatches to them.
- ``importing``: the interoperable import pipeline (web-download, glance-direct,
  glance-download, copy-image): fetch or read the bytes, judge them with the registry's gate,
  convert them (``ops.convert``) when the target store wants another format, write them into
  each store, activate — or undo everything and say why in one sentence.
- ``exporting``: an image converted to a download format, served by a signed, expiring URL.
- ``web_download``: the URL policy (no SSRF) and the resumable HTTP fetch.
- ``queue``: handing a new task to whoever runs it: the embedded threads, or Procrastinate
  (``procrastinate_queue``) when the registry runs ``--task-queue procrastinate``.
- ``sweep``: tasks whose worker died are run again (or failed with that reason), stages that
  stalled are undone, expired exports and tasks removed.

Where this room sits, and why here: tasks are the registry service's own work — they change
its catalog rows with its rules (the import lock, Glance's statuses), write its stores under
its sweep's protocol, and judge bytes with its upload gate (``imagewright.upload_gate``) — so they
belong to ``service/`` beside the APIs that create them, not to a floor below it: nothing under
``service`` (``ops``, ``catalog``, ``stores``) knows what a registry is, and none of them
imports this. The dependencies stay pointing down: ``service.images`` routes → ``service.tasks``
(to create and queue) → ``catalog`` | ``stores`` | ``ops.convert`` | ``gate``; and
``cli/worker.py`` → ``service.tasks`` only — a worker process never builds the HTTP app, and
in the Procrastinate mode no server process runs any of the heavy steps.
"""
