"""The OAuth 2 / OpenID Connect protocol side: client options, authorization requests,
Authlib's grants and endpoints. No HTTP framework here: :mod:`bridge.routes.oidc` serves it."""
