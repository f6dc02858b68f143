"""The default metadata definitions (one namespace per JSON file), loaded on a catalog's first start.

Written for imagewright from the image properties OpenStack compute acts on (Nova's image
property reference, Glance's ``etc/metadefs``), keeping Glance's namespace names so that
Horizon and scripts that look for them find them. Each file is a namespace document as
``POST /v2/metadefs/namespaces`` takes it.
"""
