"""The compute API at ``/compute/v1/instances``: instance records over JSON, per project.

``routes``: list, create, show, delete with the registry's tokens (``X-Auth-Token``); the rules
(readers see their project's instances, members create and delete, admins everything; another
project's instance is 404) are ``catalog.instances``'s, the same the CLI's records obey.
"""
