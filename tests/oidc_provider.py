"""A real OpenID provider for the OAuth tests: oidc-provider (npm, tests/oidc) run by node on loopback.

The test owns the provider's signing keys (so it can also sign tokens the provider would never issue),
its clients, and its clock: `clock_start` makes the provider's "now" start at the test's FakeClock.
`configure` rewrites the configuration and reloads it (SIGHUP) on the same issuer, as a key rotation
at a real identity provider would look to a server that keeps running.
"""

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

OIDC_DIR = Path(__file__).parent / "oidc"


def provider_missing() -> str | None:
    """Why the provider cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is needed for the OpenID provider (apt-get install nodejs npm)"
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        return "oidc-provider is not installed: run `npm ci` in tests/oidc (.ci/run does)"
    return None


@dataclass
class SigningKey:
    """A private key the test holds, with its public JWK and the private JWK the provider signs with."""

    kid: str
    alg: str
    private: Any

    @classmethod
    def new(cls, kid: str, alg: str = "ES256") -> "SigningKey":
        private = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else rsa.generate_private_key(65537, 2048)
        return cls(kid, alg, private)

    def jwk(self, *, private: bool) -> dict[str, Any]:
        algorithm = ECAlgorithm if self.alg == "ES256" else RSAAlgorithm
        key = self.private if private else self.private.public_key()
        return {**algorithm.to_jwk(key, as_dict=True), "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **header})


@dataclass
class OidcProvider:
    """A running provider: its issuer URL, and how to reconfigure it and get tokens from it."""

    issuer: str
    process: subprocess.Popen[str]
    config_path: Path
    lines: "queue.Queue[str]"
    config: dict[str, Any] = field(default_factory=dict)

    def configure(self, **changes: Any) -> None:
        """Change the configuration (keys, alg, clients, clock_start) and wait until the provider serves it."""
        self.config.update(changes)
        self.config_path.write_text(json.dumps(self.config))
        self.process.send_signal(signal.SIGHUP)
        _wait_ready(self)

    def token(self, client_id: str, resource: str, scope: str | None = None) -> str:
        """An access token from the token endpoint (client credentials grant, RFC 8707 resource)."""
        client = next(c for c in self.config["clients"] if c["client_id"] == client_id)
        form = {"grant_type": "client_credentials", "client_id": client_id,
                "client_secret": client["client_secret"], "resource": resource,
                "scope": client["scope"] if scope is None else scope}  # fmt: skip
        response = httpx2.post(f"{self.issuer}/token", data=form, timeout=30)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["token_type"].lower() == "bearer"
        return str(answer["access_token"])


def client(client_id: str, scope: str, prefixes: list[str] | None = None) -> dict[str, Any]:
    """A client of the provider (its secret derived from its id: these are test clients)."""
    entry: dict[str, Any] = {"client_id": client_id, "client_secret": f"{client_id}-secret-0123456789", "scope": scope}
    if prefixes is not None:
        entry["budget_prefixes"] = prefixes
    return entry


@contextmanager
def oidc_provider(tmp_path: Path, **config: Any) -> Iterator[OidcProvider]:
    """Start the provider with `config` (see tests/oidc/provider.mjs); stop it on exit."""
    config_path = tmp_path / "oidc-config.json"
    config_path.write_text(json.dumps(config))
    process = subprocess.Popen(
        ["node", str(OIDC_DIR / "provider.mjs"), str(config_path)], cwd=OIDC_DIR,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ),
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    provider = OidcProvider("", process, config_path, lines, dict(config))
    try:
        provider.issuer = _wait_ready(provider)
        yield provider
    finally:
        process.terminate()
        process.wait(timeout=20)
        reader.join(timeout=20)  # it ends at the end of the output
        assert process.stdout is not None
        process.stdout.close()


def _wait_ready(provider: OidcProvider) -> str:
    seen: list[str] = []
    while True:
        try:
            line = provider.lines.get(timeout=30)
        except queue.Empty:
            raise AssertionError(f"the OpenID provider did not get ready: {seen}") from None
        if line.startswith("ready "):
            return line.removeprefix("ready ")
        seen.append(line)
