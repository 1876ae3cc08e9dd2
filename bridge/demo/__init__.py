"""The demo: everything ``bridge demo`` runs beside the bridge, and nothing the bridge needs.

- :mod:`bridge.demo.run`: ``bridge demo`` itself (writes the demo configuration,
  serves the bridge and the demo client, prints the URLs and the demo people);
- :mod:`bridge.demo.client`: the demo OIDC relying party, on an origin of its own;
- :mod:`bridge.demo.zendesk`: the demo Zendesk help center under ``/_demo/zendesk``;
- :mod:`bridge.demo.simulator`: the iMIS REST simulator (``bridge imis-simulator``,
  ``/_demo/imis`` in the demo, and the tests), with its people in ``people.toml``.

Only the top of the layers wires it in: ``bridge.cli`` (``demo``, ``imis-simulator``,
``imis-check`` of the built-in simulator) and ``bridge.app`` (the ``/_demo/*`` mounts,
only when ``settings.demo``). No module below them imports ``bridge.demo``; the demo
may use the core, never the other way round.
"""
