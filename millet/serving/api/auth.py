"""The feature server's security boundary: who is asking, and what they may read.

Who: a bearer token from the lender's OIDC provider, verified by Feast's own `OidcTokenParser` (the
signature against the keys the provider publishes at its `jwks_uri`, the expiry, and the audience and
issuer when `MILLET_OIDC_AUDIENCE` / `MILLET_OIDC_ISSUER` are set). Roles come from the token's `roles`
and `resource_access.<MILLET_OIDC_CLIENT_ID>.roles` claims.

What: the Feast permissions in the registry (features/permissions.py; each feature service names the
roles that read it), judged by Feast's `enforce_policy` for READ_ONLINE on the feature service asked for,
or on each feature view of a list of features (as Feast's own feature server does). A registry with no
permission refuses everything here (Feast would allow everything).

A refusal says what was refused and nothing more: not what else exists, not which role would be needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from millet.settings import Settings

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Refused(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail

    def body(self) -> str:
        """The answer's JSON body. A 403 is Feast's own error (a JSON string naming the class), so that
        Feast's remote client raises FeastPermissionError; a 401 is {"detail": ...}."""
        import json

        from feast.errors import FeastPermissionError

        if self.status == 403:
            return json.dumps(FeastPermissionError(self.detail).to_error_detail())
        return json.dumps({"detail": self.detail})


@dataclass(frozen=True)
class Caller:
    name: str
    roles: list[str] = field(default_factory=list)
    user: object = None  # feast.permissions.user.User, None when authentication is off


NOBODY = Caller("(no valid token)")
UNCHECKED = Caller("(authentication off)")


class Guard:
    """`identify` a request's caller from its Authorization header; `allow_read` what it asks for."""

    def __init__(self, store, settings: Settings):
        self.store = store
        self.required = settings.serve_auth == "oidc"
        self._parser = _token_parser(settings) if self.required else None

    async def identify(self, authorization: str | None) -> Caller:
        if not self.required:
            return UNCHECKED
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "a bearer token is required (Authorization: Bearer <token>)")
        from starlette.authentication import AuthenticationError

        try:
            user = await self._parser.user_details_from_access_token(token.strip())
        except AuthenticationError:
            raise Refused(401, "the bearer token is not valid (signature, expiry, audience or issuer)") \
                from None
        return Caller(user.username, list(user.roles), user)

    def allow_read(self, caller: Caller, resources: list, what: str) -> None:
        """Raises Refused(403) unless `caller` may READ_ONLINE every one of `resources`."""
        if not self.required:
            return
        from feast.errors import FeastPermissionError
        from feast.permissions.action import AuthzedAction
        from feast.permissions.enforcer import enforce_policy

        permissions = self.store.list_permissions(allow_cache=True)
        refused = Refused(403, f"not permitted to read {what}")
        if not permissions:  # Feast's rule for an empty set is "allow all": not here
            raise refused
        try:
            enforce_policy(permissions=permissions, user=caller.user, resources=resources,
                           actions=[AuthzedAction.READ_ONLINE], filter_only=False)
        except FeastPermissionError:
            raise refused from None


def check_exposure(settings: Settings, host: str) -> None:
    """Refuses to serve without authentication on any interface but loopback."""
    if settings.serve_auth == "none" and host not in LOOPBACK:
        raise ValueError(f"MILLET_SERVE_AUTH=none serves every feature to anyone who can connect: only on "
                         f"loopback ({', '.join(LOOPBACK)}), not on {host}")
    if settings.serve_auth == "oidc" and not settings.oidc_discovery_url:
        raise ValueError("the feature server needs its OIDC provider: set MILLET_OIDC_DISCOVERY_URL "
                         "(…/.well-known/openid-configuration), or MILLET_SERVE_AUTH=none on loopback "
                         "for a machine of your own")


def _token_parser(settings: Settings):
    from feast.permissions.auth.oidc_token_parser import OidcTokenParser
    from feast.permissions.auth_model import OidcAuthConfig

    check_exposure(settings, LOOPBACK[0])
    return OidcTokenParser(auth_config=OidcAuthConfig(
        type="oidc", auth_discovery_url=settings.oidc_discovery_url, client_id=settings.oidc_client_id,
        audience=settings.oidc_audience, issuer=settings.oidc_issuer))
