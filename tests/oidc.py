"""A real OIDC provider on loopback, for the feature server's tests: a discovery document, the JSON Web
Key Set that tokens are verified against, and a token endpoint (client credentials). Tokens are RS256
JWTs signed here with a key made for the test; nothing is mocked on the server's side of the wire."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.receivers import http_server

CLIENT_ID = "millet"  # the settings' default: roles under resource_access.millet.roles
AUDIENCE = "millet-feature-server"  # every token's `aud`, unless a test mints another
KID = "test-key-1"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Provider:
    def __init__(self, clients: dict[str, tuple[str, list[str]]]):
        self.key = new_key()
        self.clients = clients  # client id → (secret, roles)
        self.url = ""

    @property
    def discovery_url(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"

    def mint(self, subject: str, roles: list[str], *, expires_in: int = 300, key=None, **claims) -> str:
        """A token for `subject` with `roles`, signed by this provider's key unless `key` is given."""
        now = int(time.time())
        payload = {"iss": self.url, "aud": AUDIENCE, "sub": subject, "preferred_username": subject,
                   "iat": now, "exp": now + expires_in, "resource_access": {CLIENT_ID: {"roles": roles}},
                   **claims}
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": KID})

    def jwks(self) -> dict:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [public | {"kid": KID, "use": "sig", "alg": "RS256"}]}

    def discovery(self) -> dict:
        return {"issuer": self.url, "jwks_uri": f"{self.url}/jwks", "token_endpoint": f"{self.url}/token",
                "authorization_endpoint": f"{self.url}/authorize", "id_token_signing_alg_values_supported":
                ["RS256"]}

    def token_for(self, form: dict[str, str]) -> dict | None:
        secret, roles = self.clients.get(form.get("client_id", ""), (None, []))
        if form.get("grant_type") != "client_credentials" or secret is None or \
                form.get("client_secret") != secret:
            return None
        token = self.mint(form["client_id"], roles)
        return {"access_token": token, "token_type": "Bearer", "expires_in": 300}


@contextmanager
def oidc_provider(clients: dict[str, tuple[str, list[str]]] | None = None) -> Iterator[Provider]:
    """The provider on 127.0.0.1, stopped when the block ends, however it ends."""
    provider = Provider(clients or {})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            pages = {"/.well-known/openid-configuration": provider.discovery, "/jwks": provider.jwks}
            self._answer(200, pages[self.path]()) if self.path in pages else self._answer(404, {})

        def do_POST(self):
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            token = provider.token_for({k: v[0] for k, v in form.items()})
            self._answer(200, token) if token else self._answer(401, {"error": "invalid_client"})

        def _answer(self, status: int, body: dict):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    with http_server(Handler) as url:
        provider.url = url
        yield provider
