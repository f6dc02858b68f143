"""glance-download: finding an image in another Glance-compatible registry, as its user.

The remote region is the operator's (``--glance-region NAME=CLOUD[@CLOUDS_YAML]``): a cloud of a
``clouds.yaml``, authenticated through keystoneauth (openstacksdk's config loader) — the same way
every OpenStack client reaches it, so any Glance works, ours included. When an import is
accepted, the API authenticates, finds the ``image`` endpoint of the interface asked for
(``glance_service_interface``, ``public`` by default) and checks that the image exists and is
``active``; the task then downloads ``/v2/images/{id}/file`` with that token.

NOTE: the remote account decides what can be copied — every image *it* may download. Give it
a project whose visible images are meant to be copied (public ones, or those shared with it).

Source: Glance ``glance/async_/flows/_internal_plugins/glance_download.py`` (the method's
inputs and the remote ``/file`` download), keystoneauth ``Session.get_endpoint``.
"""

from __future__ import annotations

from typing import Any

from imagewright.errors import ConflictError, ImagewrightError, RequestError
from imagewright.service.tasks.environment import GlanceRegion

TIMEOUT = 30.0


def remote_image(region: GlanceRegion, image_id: str, interface: str) -> tuple[str, str]:
    """(URL of the image's data, a token to fetch it with); one-sentence errors otherwise."""
    import keystoneauth1.exceptions
    import openstack.config
    import openstack.exceptions

    try:
        files = [str(region.clouds_yaml)] if region.clouds_yaml is not None else None
        cloud = openstack.config.OpenStackConfig(config_files=files).get_one(cloud=region.cloud)
        session = cloud.get_session()
        token = session.get_token()
        endpoint = session.get_endpoint(service_type="image", interface=interface)
        if not endpoint:
            raise ImagewrightError(f"The region {region.name} lists no {interface} image endpoint.")
        base = str(endpoint).rstrip("/")
        if not base.endswith("/v2"):
            base += "/v2"
        response = session.get(
            f"{base}/images/{image_id}", timeout=TIMEOUT, raise_exc=False, headers={"X-Auth-Token": token}
        )
    except (openstack.exceptions.SDKException, keystoneauth1.exceptions.ClientException) as err:
        raise ImagewrightError(
            f"The registry of region {region.name} cannot be reached or refused our credentials: {err}."
        ) from None
    if response.status_code == 404:
        raise RequestError(f"There is no image {image_id} the region {region.name} lets us see.")
    if response.status_code != 200:
        raise ImagewrightError(
            f"The registry of region {region.name} answered {response.status_code} for image {image_id}."
        )
    remote: dict[str, Any] = response.json()
    if remote.get("status") != "active":
        raise ConflictError(
            f"The image {image_id} in region {region.name} is {remote.get('status')}, not active."
        )
    return f"{base}/images/{image_id}/file", str(token)
