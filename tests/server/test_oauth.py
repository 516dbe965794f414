"""OAuth 2.1 on HTTP: budget-mcp as a resource server, against a real OpenID provider (oidc-provider on node).

The server runs in this process under uvicorn on loopback, on the test's clock; the provider's clock
starts at the same instant (`clock_start`), so token lifetimes are the test's to move.
"""

import base64
import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from mcp import Client, MCPError
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from budget_mcp.config import Settings
from budget_mcp.errors import ConfigError
from budget_mcp.server import build_server
from budget_mcp.server.http import http_app
from budget_mcp.server.scopes import TOOL_SCOPES
from tests.conftest import FakeClock
from tests.loopback import Loopback
from tests.oidc_provider import OidcProvider, SigningKey, client, oidc_provider, provider_missing
from tests.server.test_access import as_client, ok, refused
from tests.servers import free_port, serving_app, serving_process

pytestmark = pytest.mark.anyio

STATIC = "static-admin-token-0123456789"
SCOPES = ["budget:read", "budget:spend", "budget:admin"]
CLIENTS = [
    client("operator", "budget:read budget:spend budget:admin"),
    client("agent", "budget:read budget:spend", ["acme/agent"]),
    client("reader", "budget:read", ["acme"]),
]
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}  # fmt: skip


@pytest.fixture
def keys() -> dict[str, SigningKey]:
    return {"a": SigningKey.new("key-a"), "b": SigningKey.new("key-b", "RS256"), "c": SigningKey.new("key-c")}


@pytest.fixture
def provider(tmp_path: Path, keys: dict[str, SigningKey], clock: FakeClock) -> Iterator[OidcProvider]:
    missing = provider_missing()
    if missing:
        pytest.skip(missing)
    config = {"keys": [keys["a"].jwk(private=True)], "alg": "ES256", "ttl": 3600, "clients": CLIENTS}
    with oidc_provider(tmp_path, clock_start=clock.now.timestamp(), **config) as running:
        yield running


@contextmanager
def oauth_server(
    settings: Settings, clock: FakeClock, issuer: str, transport: str = "http", **env: str
) -> Iterator[str]:
    """budget-mcp over HTTP with BUDGET_MCP_OAUTH_ISSUER and a static token, on `clock`; yields its base URL."""

    async def make(port: int) -> Any:
        env.update(BUDGET_MCP_OAUTH_ISSUER=issuer, BUDGET_MCP_TOKEN=STATIC)
        served = Settings.load(env, **{**dict(settings), "transport": transport, "port": port})
        return await http_app(served, build_server(served, clock=clock))

    with serving_app(make) as base:
        yield base


def post(base: str, token: str | None, message: dict[str, Any], path: str = "/mcp") -> httpx2.Response:
    headers = {"Accept": "application/json, text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx2.post(f"{base}{path}", json=message, headers=headers, timeout=30)


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def metadata_url(base: str) -> str:
    return f"{base}/.well-known/oauth-protected-resource/mcp"


def assert_unauthorized(response: httpx2.Response, base: str, scope: str = "budget:read") -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and f'resource_metadata="{metadata_url(base)}"' in challenge
    assert challenge.endswith(f'scope="{scope}"')


def claims(provider: OidcProvider, base: str, clock: FakeClock, **changes: Any) -> dict[str, Any]:
    """What the provider puts in an agent's token, at the test's clock, with `changes`."""
    now = int(clock.now.timestamp())
    return {"iss": provider.issuer, "aud": f"{base}/mcp", "sub": "agent", "client_id": "agent", "iat": now,
            "exp": now + 600, "scope": "budget:read budget:spend", "budget_prefixes": ["acme/agent"],
            **changes}  # fmt: skip


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_provider_tokens_work_with_their_scopes_and_prefixes_beside_static_tokens(
    settings: Settings, clock: FakeClock, provider: OidcProvider
) -> None:
    with oauth_server(settings, clock, provider.issuer) as base:
        audience = f"{base}/mcp"
        async with as_client(base, provider.token("operator", audience)) as operator:  # admin, no prefixes: all
            await ok(operator, "allocate", budget_id="acme", limit_usd="10")
            await ok(operator, "allocate", budget_id="acme/agent", limit_usd="4")
            await ok(operator, "allocate", budget_id="acme/other", limit_usd="2")
        async with as_client(base, provider.token("agent", audience)) as agent:
            held = await ok(agent, "check_budget", budget_id="acme/agent", estimated_cost_usd="1", reserve=True)
            charged = await ok(agent, "charge", budget_id="acme/agent", cost_usd="0.75",
                               reservation_id=held["reservation_id"], idempotency_key="k1")  # fmt: skip
            assert charged["spent_usd"] == "0.750000"
            text = await refused(agent, "charge", budget_id="acme/other", cost_usd="1")
            assert "the token 'oauth:agent' may not use budget 'acme/other'" in text
            assert "limited to budgets under acme/agent" in text
            listed = await ok(agent, "list_budgets")
            assert [b["budget_id"] for b in listed["budgets"]] == ["acme/agent"]
        async with as_client(base, provider.token("reader", audience)) as reader:
            status = await ok(reader, "get_budget", budget_id="acme")
            assert status["spent_usd"] == "0.750000"
        async with as_client(base, STATIC) as static:
            await ok(static, "charge", budget_id="acme/other", cost_usd="0.25")
            # the same idempotency key from a full-access caller is another namespace than the agent's
            again = await ok(static, "charge", budget_id="acme/agent", cost_usd="0.75", idempotency_key="k1")
            assert again["duplicate"] is False
            assert (await ok(static, "get_budget", budget_id="acme"))["spent_usd"] == "1.750000"


class MemoryTokens:
    """The SDK client's TokenStorage, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def test_the_sdk_client_finds_the_provider_from_the_401_and_gets_its_own_token(
    settings: Settings, clock: FakeClock, provider: OidcProvider
) -> None:
    with oauth_server(settings, clock, provider.issuer) as base:
        storage = MemoryTokens()
        auth = ClientCredentialsOAuthProvider(
            f"{base}/mcp", storage, "operator", "operator-secret-0123456789",
            token_endpoint_auth_method="client_secret_post", scope="budget:admin", issuer=provider.issuer,
        )  # fmt: skip
        async with (
            httpx2.AsyncClient(auth=auth, timeout=30) as http,
            Client(streamable_http_client(f"{base}/mcp", http_client=http)) as operator,
        ):
            await ok(operator, "allocate", budget_id="acme", limit_usd="10")
            assert (await ok(operator, "get_budget", budget_id="acme"))["limit_usd"] == "10.000000"
    # it asked for budget:read (the 401's scope), then stepped up on allocate's 403 to budget:admin too
    assert storage.tokens is not None and storage.tokens.scope == "budget:read budget:admin"
    granted = jwt.decode(storage.tokens.access_token, options={"verify_signature": False})
    assert granted["aud"] == f"{base}/mcp" and granted["iss"] == provider.issuer  # RFC 8707: for this server


async def test_metadata_document_names_the_resource_its_issuer_and_scopes(
    settings: Settings, clock: FakeClock, provider: OidcProvider
) -> None:
    with oauth_server(settings, clock, provider.issuer) as base:
        document = httpx2.get(metadata_url(base), timeout=30)
        missing = post(base, None, INITIALIZE)
        wrong = post(base, "not-a-token", INITIALIZE)
        charging = post(base, None, call("charge", budget_id="acme", cost_usd="1"))
        health = httpx2.get(f"{base}/health", timeout=30)
    assert document.status_code == 200
    assert document.json() == {
        "resource": f"{base}/mcp",
        "authorization_servers": [provider.issuer],
        "scopes_supported": SCOPES,
        "bearer_methods_supported": ["header"],
        "resource_name": "budget-mcp",
    }
    assert_unauthorized(missing, base)
    assert_unauthorized(wrong, base)
    assert_unauthorized(charging, base, scope="budget:spend")
    assert health.status_code == 200


def expired(provider: OidcProvider, base: str, keys: dict[str, SigningKey], clock: FakeClock) -> str:
    now = int(clock.now.timestamp())
    return keys["a"].sign(claims(provider, base, clock, iat=now - 7200, exp=now - 3600))


def not_yet_valid(provider: OidcProvider, base: str, keys: dict[str, SigningKey], clock: FakeClock) -> str:
    return keys["a"].sign(claims(provider, base, clock, nbf=int(clock.now.timestamp()) + 3600))


def wrong_issuer(provider: OidcProvider, base: str, keys: dict[str, SigningKey], clock: FakeClock) -> str:
    return keys["a"].sign(claims(provider, base, clock, iss="http://127.0.0.1:9/other-idp"))


def wrong_audience(provider: OidcProvider, base: str, keys: dict[str, SigningKey], clock: FakeClock) -> str:
    return provider.token("agent", "http://elsewhere.example/mcp")  # the provider's own, for another resource


def alg_none(provider: OidcProvider, base: str, keys: dict[str, SigningKey], clock: FakeClock) -> str:
    return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': 'key-a'})}.{b64(claims(provider, base, clock))}."


def bad_signature(provider: OidcProvider, base: str, keys: dict[str, SigningKey], clock: FakeClock) -> str:
    header, _, signature = provider.token("agent", f"{base}/mcp").split(".")  # a real token, its claims changed
    return f"{header}.{b64(claims(provider, base, clock, budget_prefixes=['acme']))}.{signature}"


def unknown_key(provider: OidcProvider, base: str, keys: dict[str, SigningKey], clock: FakeClock) -> str:
    return SigningKey.new("key-a").sign(claims(provider, base, clock))  # the provider's key id, another key


def prefixes_not_budget_ids(provider: OidcProvider, base: str, keys: dict[str, SigningKey], clock: FakeClock) -> str:
    return keys["a"].sign(claims(provider, base, clock, budget_prefixes=["Acme Corp"]))


def hmac_with_public_key(provider: OidcProvider, base: str, keys: dict[str, SigningKey], clock: FakeClock) -> str:
    """The classic confusion: HS256 keyed with the published key, as a verifier trusting the header would check it."""
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': 'key-a'})}.{b64(claims(provider, base, clock))}"
    public = json.dumps(keys["a"].jwk(private=False)).encode()
    signature = base64.urlsafe_b64encode(hmac.new(public, signing_input.encode(), "sha256").digest()).rstrip(b"=")
    return f"{signing_input}.{signature.decode()}"


@pytest.mark.parametrize(
    "forge",
    [
        expired,
        not_yet_valid,
        wrong_issuer,
        wrong_audience,
        alg_none,
        bad_signature,
        unknown_key,
        hmac_with_public_key,
        prefixes_not_budget_ids,
    ],
)
async def test_invalid_tokens_get_401_with_the_metadata_url(
    settings: Settings, clock: FakeClock, provider: OidcProvider, keys: dict[str, SigningKey], forge: Any
) -> None:
    with oauth_server(settings, clock, provider.issuer) as base:
        good = post(base, keys["a"].sign(claims(provider, base, clock)), INITIALIZE)
        bad = post(base, forge(provider, base, keys, clock), INITIALIZE)
    assert good.status_code == 200, good.text  # the same claims, signed right, pass: only the flaw is refused
    assert_unauthorized(bad, base)


async def test_a_provider_token_is_refused_once_expired_on_the_servers_clock(
    settings: Settings, clock: FakeClock, provider: OidcProvider
) -> None:
    with oauth_server(settings, clock, provider.issuer) as base:
        token = provider.token("agent", f"{base}/mcp")
        assert post(base, token, INITIALIZE).status_code == 200
        clock.advance(seconds=3600 + 20)  # past exp, within the leeway
        assert post(base, token, INITIALIZE).status_code == 200
        clock.advance(seconds=20)
        assert_unauthorized(post(base, token, INITIALIZE), base)


async def test_a_configured_audience_replaces_the_mcp_url(
    settings: Settings, clock: FakeClock, provider: OidcProvider
) -> None:
    audience = "https://budget.example.com/mcp"
    with oauth_server(settings, clock, provider.issuer, BUDGET_MCP_OAUTH_AUDIENCE=audience) as base:
        configured = post(base, provider.token("agent", audience), INITIALIZE)
        default = post(base, provider.token("agent", f"{base}/mcp"), INITIALIZE)
    assert configured.status_code == 200
    assert_unauthorized(default, base)


async def test_rotated_in_keys_work_and_rotated_out_keys_are_refused_without_a_restart(
    settings: Settings, clock: FakeClock, provider: OidcProvider, keys: dict[str, SigningKey]
) -> None:
    with oauth_server(settings, clock, provider.issuer) as base:
        audience = f"{base}/mcp"
        old = provider.token("agent", audience)
        assert post(base, old, INITIALIZE).status_code == 200

        clock.advance(seconds=31)  # unknown key ids refetch the key set at most every 30 s
        provider.configure(keys=[keys["b"].jwk(private=True), keys["a"].jwk(private=True)], alg="RS256",
                           clock_start=clock.now.timestamp())  # fmt: skip
        new = provider.token("agent", audience)
        assert jwt.get_unverified_header(new) == {"alg": "RS256", "kid": "key-b", "typ": "at+jwt"}
        assert post(base, new, INITIALIZE).status_code == 200
        assert post(base, old, INITIALIZE).status_code == 200  # still published

        clock.advance(seconds=31)
        provider.configure(keys=[keys["c"].jwk(private=True), keys["b"].jwk(private=True)], alg="ES256",
                           clock_start=clock.now.timestamp())  # fmt: skip
        newest = provider.token("agent", audience)
        assert post(base, newest, INITIALIZE).status_code == 200
        assert_unauthorized(post(base, old, INITIALIZE), base)  # key-a is gone from the provider
        assert post(base, new, INITIALIZE).status_code == 200


async def test_a_token_without_the_operations_scope_gets_403_naming_it(
    settings: Settings, clock: FakeClock, provider: OidcProvider, keys: dict[str, SigningKey]
) -> None:
    with oauth_server(settings, clock, provider.issuer) as base:
        audience = f"{base}/mcp"
        async with as_client(base, STATIC) as static:
            await ok(static, "allocate", budget_id="acme", limit_usd="10")
            await ok(static, "allocate", budget_id="acme/agent", limit_usd="4")
        reader, agent = provider.token("reader", audience), provider.token("agent", audience)
        no_budget_scope = keys["a"].sign(claims(provider, base, clock, scope="openid profile"))
        cases = [
            (no_budget_scope, INITIALIZE, "budget:read"),
            (reader, call("charge", budget_id="acme", cost_usd="1"), "budget:spend"),
            (reader, call("check_budget", budget_id="acme", estimated_cost_usd="1"), "budget:spend"),
            (reader, call("release", reservation_id="r-1"), "budget:spend"),
            (agent, call("allocate", budget_id="acme/agent/sub", limit_usd="1"), "budget:admin"),
            (agent, call("release", budget_id="acme/agent"), "budget:admin"),
        ]
        answers = [(post(base, token, message), scope) for token, message, scope in cases]
        async with as_client(base, reader) as reading:
            with pytest.raises(MCPError):  # what the SDK's client makes of the 403
                await reading.call_tool("charge", {"budget_id": "acme", "cost_usd": "1"})
            assert (await ok(reading, "get_budget", budget_id="acme"))["spent_usd"] == "0.000000"
        async with as_client(base, STATIC) as static:
            assert (await ok(static, "get_budget", budget_id="acme"))["spent_usd"] == "0.000000"
        admin_only = claims(provider, base, clock, scp=["budget:admin"])  # the list form some providers use
        del admin_only["budget_prefixes"], admin_only["scope"]
        async with as_client(base, keys["a"].sign(admin_only)) as admin:  # admin includes spend, and every budget
            assert (await ok(admin, "charge", budget_id="acme", cost_usd="1"))["spent_usd"] == "1.000000"
    for answer, scope in answers:
        assert answer.status_code == 403, answer.text
        challenge = answer.headers["www-authenticate"]
        assert challenge.startswith('Bearer error="insufficient_scope"')
        assert f'scope="{scope}"' in challenge and f'resource_metadata="{metadata_url(base)}"' in challenge
        assert answer.json() == {
            "error": "insufficient_scope",
            "error_description": f"this request needs the scope {scope}",
        }


async def test_sse_applies_the_same_rules(settings: Settings, clock: FakeClock, provider: OidcProvider) -> None:
    with oauth_server(settings, clock, provider.issuer, transport="sse") as base:
        audience = f"{base}/mcp"
        reader = provider.token("reader", audience)
        headers = {"Authorization": f"Bearer {reader}"}
        async with Client(sse_client(f"{base}/sse", headers=headers)) as reading:
            assert (await reading.call_tool("get_budget", {"budget_id": "acme"})).is_error  # not created: read ran
            listed = await ok(reading, "list_budgets")
            assert listed["budgets"] == []
        charge = post(base, reader, call("charge", budget_id="acme", cost_usd="1"), path="/messages/?session_id=00")
        unauthenticated = httpx2.get(f"{base}/sse", timeout=30)
        document = httpx2.get(metadata_url(base), timeout=30)
    assert charge.status_code == 403 and 'scope="budget:spend"' in charge.headers["www-authenticate"]
    assert_unauthorized(unauthenticated, base)
    assert document.json()["resource"] == f"{base}/mcp"


def idp(loopback: Loopback, keys: list[SigningKey]) -> None:
    """An identity provider's metadata and key set, served by the loopback server."""
    loopback.serve("/.well-known/openid-configuration",
                   json.dumps({"issuer": loopback.url, "jwks_uri": f"{loopback.url}/jwks"}))  # fmt: skip
    loopback.serve("/jwks", json.dumps({"keys": [k.jwk(private=False) for k in keys]}))


async def test_unknown_key_ids_refetch_the_keys_at_most_every_30_seconds(
    settings: Settings, clock: FakeClock, price_server: Loopback
) -> None:
    key = SigningKey.new("k1")
    idp(price_server, [key])
    with oauth_server(settings, clock, price_server.url) as base:
        now = int(clock.now.timestamp())
        token_claims = {"iss": price_server.url, "aud": f"{base}/mcp", "sub": "a", "exp": now + 3600,
                        "scope": "budget:read"}  # fmt: skip
        assert post(base, key.sign(token_claims), INITIALIZE).status_code == 200
        stranger = SigningKey.new("k2")
        for _ in range(3):  # made-up key ids: one refetch per 30 s at most
            assert post(base, stranger.sign(token_claims), INITIALIZE).status_code == 401
        fetched_early = len(price_server.received("/jwks"))
        clock.advance(seconds=31)
        idp(price_server, [key, stranger])  # now it is real
        assert post(base, stranger.sign(token_claims), INITIALIZE).status_code == 200
        fetched_late = len(price_server.received("/jwks"))
        clock.advance(seconds=601)  # older than 10 minutes: fetched again on the next use
        idp(price_server, [stranger])
        assert post(base, key.sign(token_claims), INITIALIZE).status_code == 401
    assert (fetched_early, fetched_late, len(price_server.received("/jwks"))) == (1, 2, 3)
    assert len(price_server.received("/.well-known/openid-configuration")) == 1


async def test_an_issuer_with_a_path_is_found_at_its_rfc_8414_location(
    settings: Settings, clock: FakeClock, price_server: Loopback
) -> None:
    key, issuer = SigningKey.new("k1"), f"{price_server.url}/tenants/acme"
    metadata = {"issuer": issuer, "jwks_uri": f"{price_server.url}/keys"}
    price_server.serve("/.well-known/oauth-authorization-server/tenants/acme", json.dumps(metadata))
    price_server.serve("/keys", json.dumps({"keys": [key.jwk(private=False)]}))
    with oauth_server(settings, clock, issuer) as base:
        now = int(clock.now.timestamp())
        token = key.sign({"iss": issuer, "aud": f"{base}/mcp", "exp": now + 60, "scope": "budget:read", "sub": "x"})
        answer = post(base, token, INITIALIZE)
        document = httpx2.get(metadata_url(base), timeout=30).json()
    assert answer.status_code == 200, answer.text
    assert document["authorization_servers"] == [issuer]
    assert [r.path for r in price_server.requests] == [
        "/tenants/acme/.well-known/openid-configuration",  # OpenID Connect's location first: 404 here
        "/.well-known/oauth-authorization-server/tenants/acme",
        "/keys",
    ]


async def test_every_tool_has_a_scope(settings: Settings) -> None:
    async with Client(build_server(settings)) as local:
        names = {tool.name for tool in (await local.list_tools()).tools}
    assert names == set(TOOL_SCOPES)  # a new tool must say which scope it needs (unlisted: budget:admin)


async def test_an_unreachable_provider_refuses_tokens_until_it_answers_and_later_outages_keep_the_known_keys(
    settings: Settings, clock: FakeClock, price_server: Loopback
) -> None:
    key = SigningKey.new("k1")
    price_server.serve("/.well-known/openid-configuration", "down for maintenance", status=503)
    with oauth_server(settings, clock, price_server.url) as base:
        now = int(clock.now.timestamp())
        signed = {"iss": price_server.url, "aud": f"{base}/mcp", "sub": "a", "exp": now + 7200, "scope": "budget:read"}
        token = key.sign(signed)
        without_kid = jwt.encode(signed, key.private, algorithm="ES256")  # the only key of the set: no kid needed
        assert_unauthorized(post(base, token, INITIALIZE), base)
        idp(price_server, [key])
        assert_unauthorized(post(base, token, INITIALIZE), base)  # not asked again within 30 s
        clock.advance(seconds=31)
        assert post(base, token, INITIALIZE).status_code == 200
        assert post(base, without_kid, INITIALIZE).status_code == 200
        price_server.serve("/jwks", "{}", status=500)
        clock.advance(seconds=601)  # the keys are old, and the provider fails: they are kept meanwhile
        assert post(base, token, INITIALIZE).status_code == 200
        price_server.serve("/jwks", json.dumps({"keys": "not a list"}))
        clock.advance(seconds=31)
        assert post(base, token, INITIALIZE).status_code == 200
    assert len(price_server.received("/jwks")) == 3


async def test_metadata_of_another_issuer_is_not_trusted(
    settings: Settings, clock: FakeClock, price_server: Loopback
) -> None:
    key = SigningKey.new("k1")
    foreign = {"issuer": "https://evil.example", "jwks_uri": f"{price_server.url}/jwks"}
    price_server.serve("/.well-known/openid-configuration", json.dumps(foreign))
    price_server.serve("/jwks", json.dumps({"keys": [key.jwk(private=False)]}))
    with oauth_server(settings, clock, price_server.url) as base:
        now = int(clock.now.timestamp())
        token = key.sign({"iss": price_server.url, "aud": f"{base}/mcp", "exp": now + 60, "scope": "budget:admin",
                          "sub": "x"})  # fmt: skip
        assert_unauthorized(post(base, token, INITIALIZE), base)
    assert price_server.received("/jwks") == []


def test_the_console_script_serves_oauth_from_its_environment(tmp_path: Path) -> None:
    missing = provider_missing()
    if missing:
        pytest.skip(missing)
    port = free_port()
    # The provider starts after the server, on the machine's clock (or CI's faked one): never ahead of it.
    with serving_process("http", tmp_path / "ledger.db", BUDGET_MCP_OAUTH_ISSUER=f"http://127.0.0.1:{port}") as served:
        config = {"keys": [SigningKey.new("k").jwk(private=True)], "clients": CLIENTS, "port": port}
        with oidc_provider(tmp_path, **config) as running:
            operator = running.token("operator", f"{served.base}/mcp")
            reader = running.token("reader", f"{served.base}/mcp")
            initialized = post(served.base, operator, INITIALIZE)
            spent = post(served.base, reader, call("charge", budget_id="acme", cost_usd="1"))
            refused_ = post(served.base, running.token("agent", "http://elsewhere.example/mcp"), INITIALIZE)
    assert initialized.status_code == 200
    assert spent.status_code == 403
    assert refused_.status_code == 401


@pytest.mark.parametrize(
    ("issuer", "ok_"),
    [("https://idp.example.com", True), ("http://127.0.0.1:8080/realms/x", True),
     ("http://idp.example.com", False), ("https://idp.example.com?x=1", False), ("idp.example.com", False)],
)  # fmt: skip
def test_the_issuer_must_be_https_or_loopback(tmp_path: Path, issuer: str, ok_: bool) -> None:
    env = {"BUDGET_MCP_OAUTH_ISSUER": issuer}
    if ok_:
        loaded = Settings.load(env, db_path=tmp_path / "l.db", transport="http", host="0.0.0.0")
        loaded.check_exposure()  # an issuer is a way to require tokens: binding beyond loopback is allowed
        assert loaded.oauth_issuer == issuer
    else:
        with pytest.raises(ConfigError, match="must be the authorization server's https:// issuer URL"):
            Settings.load(env, db_path=tmp_path / "l.db")


def test_an_audience_without_an_issuer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BUDGET_MCP_OAUTH_AUDIENCE is set without BUDGET_MCP_OAUTH_ISSUER"):
        Settings.load({"BUDGET_MCP_OAUTH_AUDIENCE": "https://budget.example.com/mcp"}, db_path=tmp_path / "l.db")


def test_static_token_names_cannot_pose_as_oauth_clients(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[[token]]\nname = "oauth:agent"\ntoken = "a-long-enough-token-123"\nprefixes = ["x"]\n')
    with pytest.raises(ConfigError, match="names starting with 'oauth:' are kept for OAuth clients"):
        build_server(Settings.load({"BUDGET_MCP_TOKENS": str(tokens)}, db_path=tmp_path / "l.db", transport="http"))


async def test_the_http_api_asks_each_route_for_its_tools_scope(
    settings: Settings, clock: FakeClock, provider: OidcProvider
) -> None:
    with oauth_server(settings, clock, provider.issuer) as base:
        audience = f"{base}/mcp"

        def api(token: str | None, method: str, path: str, body: dict[str, Any] | None = None) -> httpx2.Response:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return httpx2.request(method, f"{base}/api/v1/{path}", json=body, headers=headers, timeout=30)

        assert api(STATIC, "POST", "allocate", {"budget_id": "acme", "limit_usd": "10"}).status_code == 200
        assert api(STATIC, "POST", "allocate", {"budget_id": "acme/agent", "limit_usd": "4"}).status_code == 200
        reader, agent = provider.token("reader", audience), provider.token("agent", audience)
        assert api(reader, "GET", "budgets/acme").status_code == 200
        assert api(reader, "POST", "get_budget", {"budget_id": "acme"}).status_code == 200
        for token, path, body, scope in [
            (reader, "charge", {"budget_id": "acme", "cost_usd": "1"}, "budget:spend"),
            (reader, "check_budget", {"budget_id": "acme", "estimated_cost_usd": "1"}, "budget:spend"),
            (agent, "allocate", {"budget_id": "acme/agent/x", "limit_usd": "1"}, "budget:admin"),
            (agent, "release", {"budget_id": "acme/agent"}, "budget:admin"),
        ]:
            refused = api(token, "POST", path, body)
            assert refused.status_code == 403, (path, refused.text)
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["detail"].startswith(f"this request needs the scope {scope}")
            assert f'error="insufficient_scope", scope="{scope}"' in refused.headers["www-authenticate"]
        charged = api(agent, "POST", "charge", {"budget_id": "acme/agent", "cost_usd": "0.5"})
        assert charged.status_code == 200, charged.text
        outside = api(agent, "POST", "charge", {"budget_id": "acme", "cost_usd": "1"})
        assert outside.status_code == 403 and "the token 'oauth:agent' may not use budget 'acme'" in outside.text
        missing = api(None, "POST", "charge", {"budget_id": "acme", "cost_usd": "1"})
        assert missing.status_code == 401 and missing.headers["content-type"] == "application/problem+json"
        challenge = missing.headers["www-authenticate"]
        assert f'resource_metadata="{metadata_url(base)}"' in challenge and challenge.endswith('scope="budget:spend"')
        assert api("not-a-token", "GET", "budgets").status_code == 401
        assert api(STATIC, "GET", "budgets/acme").json()["spent_usd"] == "0.500000"


async def test_the_event_stream_and_websocket_need_budget_read(
    settings: Settings, clock: FakeClock, provider: OidcProvider, keys: dict[str, SigningKey]
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    with oauth_server(settings, clock, provider.issuer) as base:
        no_budget_scope = keys["a"].sign(claims(provider, base, clock, scope="openid profile"))
        reader = provider.token("reader", f"{base}/mcp")
        socket_url = f"ws://{base.removeprefix('http://')}/ws"
        for token, status in ((no_budget_scope, 403), (reader, 200)):
            with httpx2.stream("GET", f"{base}/api/v1/events", headers=bearer(token), timeout=30) as stream:
                assert stream.status_code == status, stream.read()
                if status == 403:
                    assert 'scope="budget:read"' in stream.headers["www-authenticate"]
        with pytest.raises(InvalidStatus) as refusal:
            async with connect(socket_url, additional_headers=bearer(no_budget_scope)):
                pass
        assert refusal.value.response.status_code == 403
        assert b"budget:read" in refusal.value.response.body
        async with connect(socket_url, additional_headers=bearer(reader)) as socket:
            assert socket.protocol.state.name == "OPEN"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
