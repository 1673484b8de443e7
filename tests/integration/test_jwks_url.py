"""Keys from a JWKS URL: fetched when a token names an unknown key id (a key rotation)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditlog_service.auth import AuthSettings, TokenVerifier
from auditlog_service.devkeys import DEV_AUDIENCE, DEV_ISSUER, ensure_dev_keys
from auditlog_service.errors import Unauthenticated


class JwksServer:
    """A real HTTP server on a free port that serves whatever JWKS it is given."""

    def __init__(self) -> None:
        self.document: dict[str, object] = {"keys": []}
        self.fetches = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps(owner.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.asyncio
async def test_a_new_key_is_fetched_when_a_token_names_it(
    jwks_server: JwksServer, tmp_path: Path
) -> None:
    old, new = ensure_dev_keys(tmp_path / "old"), ensure_dev_keys(tmp_path / "new")
    jwks_server.document = json.loads(old.jwks_file.read_text())
    verifier = TokenVerifier(
        AuthSettings(
            issuer=DEV_ISSUER,
            audience=DEV_AUDIENCE,
            jwks_url=jwks_server.url,
            jwks_refresh_min_interval_s=0,
        )
    )
    first = await verifier.verify(f"Bearer {old.mint('acme', ['events:read'])}")
    assert first.tenant == "acme"
    with pytest.raises(Unauthenticated, match="key id"):
        await verifier.verify(f"Bearer {new.mint('acme', ['events:read'])}")
    # The issuer rotates: the set now has the new key too.
    keys = (
        json.loads(old.jwks_file.read_text())["keys"]
        + json.loads(new.jwks_file.read_text())["keys"]
    )
    jwks_server.document = {"keys": keys}
    fetches = jwks_server.fetches
    rotated = await verifier.verify(f"Bearer {new.mint('globex', ['events:read'])}")
    assert rotated.tenant == "globex"
    assert jwks_server.fetches == fetches + 1


@pytest.mark.asyncio
async def test_made_up_key_ids_do_not_make_it_fetch_more_than_once_an_interval(
    jwks_server: JwksServer, tmp_path: Path
) -> None:
    keys = ensure_dev_keys(tmp_path / "k")
    jwks_server.document = json.loads(keys.jwks_file.read_text())
    verifier = TokenVerifier(
        AuthSettings(issuer=DEV_ISSUER, audience=DEV_AUDIENCE, jwks_url=jwks_server.url)
    )
    stranger = ensure_dev_keys(tmp_path / "stranger")
    for n in range(5):
        with pytest.raises(Unauthenticated):
            await verifier.verify(
                f"Bearer {stranger.mint('acme', ['events:read'], subject=str(n))}"
            )
    assert jwks_server.fetches == 1
