"""The token store and the Workday REST connector against an authlib OAuth 2.0 server.

The server is authlib's ``AuthorizationServer`` with its ``RefreshTokenGrant``,
HTTP Basic client authentication and refresh-token rotation switched on
(``INCLUDE_NEW_REFRESH_TOKEN``), served by Starlette on 127.0.0.1. It is
independent of the Workday simulator, so the connector is checked against a
second implementation of RFC 6749.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]
    AuthorizationServer,
    ClientMixin,
    OAuth2Request,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.requests import (  # type: ignore[import-untyped]
    BasicOAuth2Payload,
)
from authlib.oauth2.rfc6750 import (  # type: ignore[import-untyped]
    BearerTokenGenerator,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from impactin_core import AuthContext, AuthenticationError, PlatformSettings, TokenCache
from impactin_core._crypto import Sealer, generate_key
from impactin_core._store import Store
from impactin_core.sandbox import SandboxServer
from impactin_workday import PLATFORM, _plugin

TENANT_NAME = "authlib_tenant"
CLIENT_ID = "integration-client"
CLIENT_SECRET = "integration-client-secret"
FIRST_REFRESH_TOKEN = "first-refresh-token-4c1d"


class Client(ClientMixin):  # type: ignore[misc]
    def get_client_id(self) -> str:
        return CLIENT_ID

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(client_secret, CLIENT_SECRET)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "refresh_token"

    def get_allowed_scope(self, scope: str) -> str:
        return scope


class Token(TokenMixin):  # type: ignore[misc]
    def __init__(self, refresh_token: str, access_token: str | None = None) -> None:
        self.refresh_token = refresh_token
        self.access_token = access_token
        self.revoked = False

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == CLIENT_ID)

    def get_scope(self) -> str:
        return ""

    def get_expires_in(self) -> int:
        return 3600

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return self.revoked


class TokenRequest(OAuth2Request):  # type: ignore[misc]
    def __init__(self, method: str, uri: str, headers: Any, form: dict[str, str]):
        super().__init__(method, uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class RotatingRefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    INCLUDE_NEW_REFRESH_TOKEN = True
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic"]

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        server: CountingServer = self.server
        token = server.refresh_tokens.get(refresh_token)
        return None if token is None or token.revoked else token

    def authenticate_user(self, refresh_token: Token) -> str:
        return "integration-user"

    def revoke_old_credential(self, refresh_token: Token) -> None:
        refresh_token.revoked = True


class CountingServer(AuthorizationServer):  # type: ignore[misc]
    """An authorization server that counts the tokens it grants."""

    def __init__(self) -> None:
        super().__init__()
        self.refresh_tokens = {FIRST_REFRESH_TOKEN: Token(FIRST_REFRESH_TOKEN)}
        self.access_tokens: set[str] = set()
        self.grants = 0
        #: Token requests, granted or not.
        self.requests = 0
        #: Seconds each grant takes, so concurrent callers overlap.
        self.delay = 0.0
        self.lock = threading.Lock()

        def random_token(**_: Any) -> str:
            return secrets.token_urlsafe(24)

        self.register_token_generator(
            "default", BearerTokenGenerator(random_token, random_token)
        )
        self.register_grant(RotatingRefreshGrant)

    def query_client(self, client_id: str) -> Client | None:
        return Client() if client_id == CLIENT_ID else None

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        self.grants += 1
        self.access_tokens.add(token["access_token"])
        rotated = token["refresh_token"]
        self.refresh_tokens[rotated] = Token(rotated, token["access_token"])

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def create_oauth2_request(self, request: TokenRequest) -> TokenRequest:
        return request

    def handle_response(
        self, status: int, body: Any, headers: Any
    ) -> tuple[int, Any, Any]:
        return status, body, headers

    def issue(self, request: TokenRequest) -> tuple[int, Any, Any]:
        with self.lock:
            self.requests += 1
            time.sleep(self.delay)
            result: tuple[int, Any, Any] = self.create_token_response(request)
            return result


def build_app(server: CountingServer) -> Starlette:
    async def token(request: Request) -> Response:
        body = (await request.body()).decode("utf-8")
        form = {key: values[0] for key, values in parse_qs(body).items()}
        oauth_request = TokenRequest("POST", str(request.url), request.headers, form)
        status, body, headers = await run_in_threadpool(server.issue, oauth_request)
        return JSONResponse(body, status_code=status, headers=dict(headers))

    async def write(request: Request) -> Response:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or value not in server.access_tokens:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse({"id": secrets.token_hex(8)}, status_code=201)

    return Starlette(
        routes=[
            Route(f"/ccx/oauth2/{TENANT_NAME}/token", token, methods=["POST"]),
            Route(
                f"/ccx/api/v1/{TENANT_NAME}/volunteerActivities",
                write,
                methods=["POST"],
            ),
        ]
    )


@pytest.fixture
def oauth(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[CountingServer, str]]:
    # authlib rejects http:// token endpoints unless this is set; the server
    # listens only on 127.0.0.1. monkeypatch restores the variable.
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    server = CountingServer()
    with SandboxServer(build_app(server)) as http:
        yield server, http.url


def settings(url: str, refresh_token: str = FIRST_REFRESH_TOKEN) -> PlatformSettings:
    return PlatformSettings(
        tenant="acme",
        platform="workday",
        base_url=url,
        protocol="rest",
        secrets={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": refresh_token,
        },
        options={"tenant_name": TENANT_NAME, "rest_path": "volunteerActivities"},
    )


async def authenticate(
    url: str,
    tokens: TokenCache,
    *,
    force: bool = False,
    refresh_token: str = FIRST_REFRESH_TOKEN,
) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        context = AuthContext(client=client, tokens=tokens, force_refresh=force)
        pending = _plugin.impactin_authenticate(
            platform=PLATFORM, settings=settings(url, refresh_token), context=context
        )
        assert pending is not None
        credentials = await pending
    return str(credentials.headers["Authorization"])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "state.db", Sealer([generate_key()], key_name="K"))
    yield store
    store.close()


async def test_grant_with_basic_auth(
    oauth: tuple[CountingServer, str], store: Store
) -> None:
    server, url = oauth
    header = await authenticate(url, TokenCache(store))
    assert header.startswith("Bearer ")
    assert server.grants == 1


async def test_rotation_persisted_each_time(
    oauth: tuple[CountingServer, str], store: Store
) -> None:
    server, url = oauth
    tokens = TokenCache(store)
    for _ in range(3):
        await authenticate(url, tokens, force=True)
    stored = store.load_token("acme", "workday")
    assert stored is not None
    live = [t.refresh_token for t in server.refresh_tokens.values() if not t.revoked]
    assert server.grants == 3
    assert live == [stored.refresh_token]
    assert server.refresh_tokens[FIRST_REFRESH_TOKEN].revoked


async def test_concurrent_callers_one_grant(
    oauth: tuple[CountingServer, str], store: Store
) -> None:
    server, url = oauth
    server.delay = 0.2
    tokens = TokenCache(store)
    headers = await asyncio.gather(*(authenticate(url, tokens) for _ in range(10)))
    assert server.requests == 1
    assert len(set(headers)) == 1


async def test_revoked_token_asks_reauthentication(
    oauth: tuple[CountingServer, str], store: Store
) -> None:
    _, url = oauth
    with pytest.raises(AuthenticationError) as caught:
        await authenticate(url, TokenCache(store), refresh_token="unknown-token-9d2e")
    message = str(caught.value)
    assert "invalid_grant" in message
    assert "'acme'" in message
    assert "'workday'" in message
    assert "unknown-token-9d2e" not in message


async def test_rest_write_with_granted_token(
    oauth: tuple[CountingServer, str], store: Store
) -> None:
    _, url = oauth
    header = await authenticate(url, TokenCache(store))
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{url}/ccx/api/v1/{TENANT_NAME}/volunteerActivities",
            json={},
            headers={"Authorization": header},
        )
    assert response.status_code == 201


_WORKER = textwrap.dedent(
    """
    import asyncio, hashlib, sys, time
    from pathlib import Path
    import httpx
    from impactin_core import AuthContext, PlatformSettings, TokenCache
    from impactin_core._crypto import Sealer
    from impactin_core._store import Store
    from impactin_workday import PLATFORM, _plugin

    url, tenant_name, database, key, folder, name = sys.argv[1:7]
    settings = PlatformSettings(
        tenant="acme", platform="workday", base_url=url, protocol="rest",
        secrets={"client_id": sys.argv[7], "client_secret": sys.argv[8],
                 "refresh_token": sys.argv[9]},
        options={"tenant_name": tenant_name, "rest_path": "volunteerActivities"},
    )
    store = Store(database, Sealer([key], key_name="K"))
    tokens = TokenCache(store, lease_poll=0.01)
    # Wait until every worker process is ready, so their requests overlap.
    Path(folder, name + ".ready").touch()
    while not Path(folder, "go").exists():
        time.sleep(0.01)

    async def one(client):
        context = AuthContext(client=client, tokens=tokens)
        credentials = await _plugin.impactin_authenticate(
            platform=PLATFORM, settings=settings, context=context
        )
        return credentials.headers["Authorization"]

    async def main():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(one(client) for _ in range(3)))

    for header in asyncio.run(main()):
        print(hashlib.sha256(header.encode()).hexdigest()[:16])
    store.close()
    """
)


def run_workers(
    url: str, database: Path, key: str, folder: Path, count: int
) -> list[str]:
    folder.mkdir(exist_ok=True)
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WORKER,
                url,
                TENANT_NAME,
                str(database),
                key,
                str(folder),
                f"worker-{index}",
                CLIENT_ID,
                CLIENT_SECRET,
                FIRST_REFRESH_TOKEN,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(count)
    ]
    deadline = time.monotonic() + 60
    while len(list(folder.glob("*.ready"))) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    (folder / "go").touch()
    outputs = []
    for process in processes:
        stdout, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        outputs.extend(stdout.split())
    return outputs


def test_processes_share_one_refresh(
    oauth: tuple[CountingServer, str], tmp_path: Path
) -> None:
    """Three processes, three callers each, one shared store file: one grant."""
    server, url = oauth
    server.delay = 0.3
    key = generate_key()
    database = tmp_path / "state.db"
    Store(database, Sealer([key], key_name="K")).close()
    fingerprints = run_workers(url, database, key, tmp_path / "run-1", count=3)
    assert len(fingerprints) == 9
    assert len(set(fingerprints)) == 1
    assert server.grants == 1
    assert server.requests == 1


def test_new_process_reuses_stored_token(
    oauth: tuple[CountingServer, str], tmp_path: Path
) -> None:
    server, url = oauth
    key = generate_key()
    database = tmp_path / "state.db"
    Store(database, Sealer([key], key_name="K")).close()
    first = run_workers(url, database, key, tmp_path / "run-1", count=1)
    second = run_workers(url, database, key, tmp_path / "run-2", count=1)
    assert server.requests == 1
    assert set(first) == set(second)


def test_cli_refresh_through_runtime(
    oauth: tuple[CountingServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from impactin_core._cli import main

    server, url = oauth
    monkeypatch.setenv("OAUTH_STORE_KEY", generate_key())
    monkeypatch.setenv("OAUTH_ACME_KEY", "acme-tenant-secret")
    monkeypatch.setenv("OAUTH_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("OAUTH_REFRESH_TOKEN", FIRST_REFRESH_TOKEN)
    credentials = (
        'client_id = "OAUTH_CLIENT_ID", client_secret = "OAUTH_CLIENT_SECRET", '
        'refresh_token = "OAUTH_REFRESH_TOKEN"'
    )
    lines = [
        "[store]",
        'path = "state.db"',
        'key_env = "OAUTH_STORE_KEY"',
        "[tenants.acme]",
        'key_env = "OAUTH_ACME_KEY"',
        "[tenants.acme.platforms.workday]",
        f'base_url = "{url}"',
        'protocol = "rest"',
        f"credentials = {{ {credentials} }}",
        f'options = {{ tenant_name = "{TENANT_NAME}", '
        'rest_path = "volunteerActivities" }',
    ]
    (tmp_path / "impactin.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    arguments = ["tokens", "refresh", "--tenant", "acme", "--platform", "workday"]
    first = runner.invoke(main, arguments, catch_exceptions=False)
    second = runner.invoke(main, arguments, catch_exceptions=False)
    listing = runner.invoke(main, ["tokens", "list"], catch_exceptions=False)
    stored = [t for t in server.refresh_tokens.values() if not t.revoked]
    assert first.exit_code == 0, first.output
    assert "Refreshed the token of tenant acme on workday" in second.output
    assert server.grants == 2
    assert stored[0].refresh_token not in listing.output
    assert str(stored[0].access_token) not in listing.output
    assert "workday" in listing.output
