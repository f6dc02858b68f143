"""The instance metadata service: EC2 (IMDSv1 and v2, with Wakame-vdc's keys) and OpenStack trees.

Its own process and its own ASGI app (``imagewright metadata serve``, or started by
``imagewright serve --metadata-listen``), reading instances from the registry's catalog:

- ``app``: the ASGI app (who is asking, tokens, rate limit, one lookup per answer);
- ``cache``: instances loaded once, trees rendered once, invalidated by the catalog's counter;
- ``tokens``: IMDSv2 session tokens; ``signing``: the identity document's signatures;
- ``access_log``: batched access log; ``config``: ``MetadataConfig``; ``serving``: the process.

The trees themselves are ``imagewright.metadata.imds``; the forwarders' channel (unix socket,
secrets, per-instance signatures) is ``imagewright.metadata.channel``.
"""
