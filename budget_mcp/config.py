"""Settings, built once from the environment and command-line flags (a flag wins over its variable).

This is the only module that reads `os.environ`.
"""

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import BaseModel, ConfigDict, Field

from budget_mcp.errors import ConfigError

Transport = Literal["stdio", "sse", "http"]
DEFAULT_PORT = 8013
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


PRICE_URL_VARIABLES = {
    "genai-prices": "BUDGET_MCP_GENAI_PRICES_URL",
    "litellm": "BUDGET_MCP_LITELLM_URL",
    "openrouter": "BUDGET_MCP_OPENROUTER_URL",
}


def default_prices_cache() -> Path:
    """Fetched price files in the platform's user cache directory, e.g. ~/.cache/budget-mcp/prices."""
    return platformdirs.user_cache_path("budget-mcp") / "prices"


def default_db_path() -> Path:
    """The ledger in the platform's user data directory, e.g. ~/.local/share/budget-mcp/ledger.db."""
    return platformdirs.user_data_path("budget-mcp") / "ledger.db"


class Settings(BaseModel):
    """Everything the server and the CLI need to know about their environment."""

    model_config = ConfigDict(frozen=True)

    db_path: Path
    database_url: str | None = None
    budgets_file: Path | None = None
    token: str | None = None
    transport: Transport = "stdio"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    insecure: bool = False
    change_poll_seconds: float = 1.0
    expiry_sweep_seconds: float = 30.0  # how often the server closes the sub-budgets whose time ran out
    prices_cache_dir: Path = Field(default_factory=default_prices_cache)
    price_overrides: Path | None = None
    price_urls: dict[str, str] = Field(default_factory=dict)
    prices_refresh_hours: float | None = None
    alert_webhook: str | None = None
    alert_attempts: int = 5
    alert_backoff_seconds: float = 1.0
    alert_timeout_seconds: float = 5.0
    tokens_file: Path | None = None
    hermes_url: str | None = None
    public_url: str | None = None
    oauth_issuer: str | None = None
    oauth_audience: str | None = None
    hermes_heartbeat_seconds: float = 30.0
    hermes_check_seconds: float = 300.0
    read_timeout_seconds: float = 10.0
    max_connections: int = 512

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **flags: Any) -> "Settings":
        """Settings from `env` (default: os.environ) overridden by the flags that are not None."""
        env = os.environ if env is None else env
        port = env.get("BUDGET_PORT")
        values: dict[str, Any] = {
            "db_path": Path(env["BUDGET_MCP_DB"]).expanduser() if env.get("BUDGET_MCP_DB") else default_db_path(),
            "database_url": env.get("BUDGET_MCP_DATABASE_URL") or None,
            "budgets_file": Path(env["BUDGET_MCP_BUDGETS"]) if env.get("BUDGET_MCP_BUDGETS") else None,
            "token": env.get("BUDGET_MCP_TOKEN") or None,
            "price_overrides": Path(env["BUDGET_MCP_PRICE_OVERRIDES"])
            if env.get("BUDGET_MCP_PRICE_OVERRIDES")
            else None,
            "price_urls": {name: env[var] for name, var in PRICE_URL_VARIABLES.items() if env.get(var)},
            "alert_webhook": env.get("BUDGET_MCP_ALERT_WEBHOOK") or None,
            "tokens_file": Path(env["BUDGET_MCP_TOKENS"]) if env.get("BUDGET_MCP_TOKENS") else None,
            "hermes_url": env.get("HERMES_URL") or None,
            "public_url": env.get("BUDGET_MCP_PUBLIC_URL") or None,
            "oauth_issuer": env.get("BUDGET_MCP_OAUTH_ISSUER") or None,
            "oauth_audience": env.get("BUDGET_MCP_OAUTH_AUDIENCE") or None,
        }
        for name, variable in (("hermes_heartbeat_seconds", "HERMES_HEARTBEAT_SECONDS"),
                               ("hermes_check_seconds", "HERMES_CHECK_SECONDS"),
                               ("read_timeout_seconds", "BUDGET_MCP_READ_TIMEOUT")):  # fmt: skip
            if env.get(variable):
                values[name] = _seconds(variable, env[variable])
        if env.get("BUDGET_MCP_PRICES_CACHE"):
            values["prices_cache_dir"] = Path(env["BUDGET_MCP_PRICES_CACHE"]).expanduser()
        hours = env.get("BUDGET_MCP_PRICES_REFRESH_HOURS")
        if hours:
            try:
                values["prices_refresh_hours"] = float(hours) if float(hours) > 0 else None
            except ValueError:
                raise ConfigError(f"BUDGET_MCP_PRICES_REFRESH_HOURS={hours!r} is not a number of hours") from None
        connections = env.get("BUDGET_MCP_MAX_CONNECTIONS")
        if connections:
            if not connections.isascii() or not connections.isdigit() or not 0 < int(connections) <= 100_000:
                raise ConfigError(f"BUDGET_MCP_MAX_CONNECTIONS={connections!r} must be a number from 1 to 100000")
            values["max_connections"] = int(connections)
        if port:
            if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"BUDGET_PORT={port!r} is not a TCP port; use a number from 1 to 65535")
            values["port"] = int(port)
        values.update({name: value for name, value in flags.items() if value is not None})
        url = values.get("database_url")
        if url and not str(url).startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"the database URL must start with postgresql://, got {str(url).split(':')[0]}:...")
        webhook = values.get("alert_webhook")
        if webhook and not str(webhook).startswith(("http://", "https://")):
            raise ConfigError(f"BUDGET_MCP_ALERT_WEBHOOK={webhook!r} must be an http:// or https:// URL")
        if values.get("oauth_issuer"):
            _check_issuer(str(values["oauth_issuer"]))
        elif values.get("oauth_audience"):
            raise ConfigError("BUDGET_MCP_OAUTH_AUDIENCE is set without BUDGET_MCP_OAUTH_ISSUER; set the issuer too")
        return cls(**values)

    @property
    def ledger_location(self) -> str | Path:
        """Where the ledger lives: the PostgreSQL URL when one is set, else the SQLite file."""
        return self.database_url or self.db_path

    def check_exposure(self) -> None:
        """Refuse to serve HTTP beyond loopback without a token, unless told it is deliberate."""
        has_token = bool(self.token or self.tokens_file or self.oauth_issuer)
        if self.transport != "stdio" and self.host not in LOOPBACK_HOSTS and not has_token and not self.insecure:
            raise ConfigError(
                f"refusing to listen on {self.host} without a token: set BUDGET_MCP_TOKEN, bind to 127.0.0.1, "
                "or pass --insecure if the network is trusted"
            )


def _seconds(variable: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 86_400:
        raise ConfigError(f"{variable}={text!r} must be a number of seconds between 0 and 86400")
    return value


def _check_issuer(issuer: str) -> None:
    """An issuer is an https URL (OAuth 2.1 requires TLS), or http on this machine's loopback."""
    parts = urlsplit(issuer)
    loopback = parts.scheme == "http" and parts.hostname in {"127.0.0.1", "localhost", "::1"}
    if not (parts.scheme == "https" or loopback) or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            f"BUDGET_MCP_OAUTH_ISSUER={issuer!r} must be the authorization server's https:// issuer URL "
            "(http:// only on 127.0.0.1 or localhost), without a query or fragment"
        )


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the {what} file {path} is not valid TOML: {exc}") from exc


def load_tokens_file(path: Path) -> list[dict[str, Any]]:
    """Scoped tokens from a TOML file of `[[token]]` tables (name, token, prefixes, create_roots)."""
    tokens = _read_toml(path, "tokens").get("token")
    if not isinstance(tokens, list) or not all(isinstance(t, dict) for t in tokens):
        raise ConfigError(f"the tokens file {path} needs [[token]] tables; see the README for an example")
    return tokens


def load_budgets_file(path: Path) -> list[dict[str, Any]]:
    """Budget declarations from a TOML file (`[budgets."id"]` tables), parents before children."""
    budgets = _read_toml(path, "budgets").get("budgets")
    if not isinstance(budgets, dict):
        raise ConfigError(f'the budgets file {path} has no [budgets."<id>"] tables; see the README for an example')
    declarations = []
    for budget_id, fields in budgets.items():
        if not isinstance(fields, dict):
            raise ConfigError(f'[budgets."{budget_id}"] in {path} must be a table of fields')
        declarations.append({"budget_id": budget_id, **fields})
    return sorted(declarations, key=lambda d: str(d["budget_id"]).count("/"))
