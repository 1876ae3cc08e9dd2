"""The pages a demo bridge serves beside itself, in one list for the app to mount.

``bridge demo`` runs the bridge with ``settings.demo``; the app then mounts
what this module lists: the demo Zendesk (``/_demo/zendesk``), the demo
DiscourseConnect forum (``/_demo/discourse``) and, when the demo's iMIS is the
built-in one, the iMIS simulator (``/_demo/imis``). A demo app added here needs
no change to the app. The demo OIDC client is not among them: ``bridge demo``
serves it on an origin of its own, as every real app is.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount

from bridge.demo.discourse import mount_demo_discourse
from bridge.demo.simulator import create_simulator
from bridge.demo.zendesk import mount_demo_zendesk


def demo_routes(*, with_simulator: bool) -> list[BaseRoute]:
    """The demo apps' mounts; ``with_simulator`` adds the iMIS simulator at /_demo/imis."""
    routes: list[BaseRoute] = [mount_demo_zendesk(), mount_demo_discourse()]
    if with_simulator:
        routes.append(Mount("/_demo/imis", app=create_simulator()))
    return routes
