"""imis-bridge: an OpenID Connect / OAuth 2 provider whose people live in iMIS.

The package is wired by :func:`bridge.app.create_app`; importing it touches no
disk, environment or network.
"""

__version__ = "0.1.0"
