"""Configuration: ``config/config.yaml`` (or ``$ISOTOPE_CONFIG``) plus environment overrides.

Precedence, highest first: environment variables, the YAML file, defaults. ``load_settings()``
returns validated :class:`Settings` and remembers where every value came from, so
``isotope doctor`` can show it. A bad value is one :class:`~app.errors.ConfigError` line naming
the key and the file.

Environment variables:

=========================  ================================================================
``ISOTOPE_CONFIG``         path of the YAML file (default ``config/config.yaml`` in the cwd)
``ISOTOPE_DATABASE_URL``   libpq URL or conninfo; replaces the file's ``postgresql`` block
``ISOTOPE_DATA_DIR``       local files: file store, outage spool, embedded cluster (``./data``)
``ISOTOPE_POSTGRES_SESSIONS``  ``true``/``false``; overrides ``postgres_sessions``
``ISOTOPE_API_TOKEN``      bearer token required by every ``/api`` route when set
``ISOTOPE_LOG_LEVEL``      ``DEBUG``, ``INFO``, ``WARNING`` ...
=========================  ================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from app.errors import ConfigError
from app.masking import mask_conninfo

DEFAULT_CONFIG_PATH = Path("config") / "config.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


TargetSessionAttrs = Literal["any", "read-write", "read-only", "primary", "standby", "prefer-standby"]


class PostgresConfig(_Section):
    """The guide's ``postgresql:`` block. Without ``host`` Isotope runs its embedded server.

    Several servers (a Patroni cluster): ``host`` and ``port`` may be lists (or libpq's comma
    lists), tried in order, and ``target_session_attrs: read-write`` keeps only the primary.
    """

    embedded: bool | None = None
    host: str | list[str] | None = None
    port: int | list[int] = 5432
    user: str | None = None
    password: SecretStr | None = None
    database: str | None = None
    target_session_attrs: TargetSessionAttrs | None = None
    options: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _embedded_or_server(self) -> PostgresConfig:
        if self.embedded is None:
            self.embedded = self.host is None
        if self.embedded and self.host is not None:
            raise ValueError("embedded: true and host are exclusive; remove one of them")
        hosts, ports = self.hosts(), self.ports()
        if len(ports) > 1 and len(ports) != len(hosts):
            raise ValueError(f"{len(ports)} ports for {len(hosts)} hosts; give one port, or one per host")
        return self

    @field_validator("host", "port", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        """libpq's ``a,b`` form is accepted as well as a YAML list."""
        if isinstance(value, str) and "," in value:
            return [part.strip() for part in value.split(",")]
        return value

    @field_validator("host")
    @classmethod
    def _some_host(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is not None and not [h for h in ([value] if isinstance(value, str) else value) if h.strip()]:
            raise ValueError("empty; name one server or a list of them")
        return value

    @field_validator("port")
    @classmethod
    def _port_range(cls, value: int | list[int]) -> int | list[int]:
        ports = [value] if isinstance(value, int) else value
        if not ports or not all(1 <= p <= 65535 for p in ports):
            raise ValueError("each port must be from 1 to 65535")
        return value

    def hosts(self) -> list[str]:
        """The configured servers, in the order libpq tries them."""
        if self.host is None:
            return []
        items = self.host if isinstance(self.host, list) else self.host.split(",")
        return [h.strip() for h in items if h.strip()]

    def ports(self) -> list[int]:
        return [self.port] if isinstance(self.port, int) else list(self.port)


class StoreConfig(_Section):
    """Pool, timeouts and limits of the session store."""

    pool_min_size: int = Field(1, ge=0, le=100)
    pool_max_size: int = Field(10, ge=1, le=1000)
    connect_timeout_s: float = Field(2.0, gt=0, le=60)
    statement_timeout_s: float = Field(10.0, gt=0, le=3600)
    lock_timeout_s: float = Field(30.0, gt=0, le=3600)
    retry_after_s: float = Field(1.0, gt=0, le=300)
    max_session_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_message_bytes: int = Field(8 * 1024 * 1024, ge=256)
    inline_member_bytes: int = Field(2048, ge=0, le=1024 * 1024)
    cache_sessions: int = Field(1000, ge=0)
    cache_messages: int = Field(200_000, ge=0)
    prepare_threshold: int | None = Field(2, ge=0)
    spool_replay_interval_s: float = Field(1.0, gt=0, le=600)


class OpenAIConfig(_Section):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, LM Studio, ...).

    The key is never in the file: ``api_key_env`` names the environment variable that holds it.
    With a ``base_url`` and that variable unset, a placeholder key is sent (local servers ignore it).
    """

    base_url: str | None = None
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(0.0, ge=0, le=2)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)


class EngineConfig(_Section):
    """The agent engine: which model, which graph, how many model calls a turn may make."""

    model: Literal["offline", "openai"] = "offline"
    enhanced_graph: bool = False
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    max_steps: int = Field(8, ge=1, le=100)
    system_prompt: str | None = None


class ApiConfig(_Section):
    """The HTTP server (``isotope serve``).

    ``token``: when set, every ``/api`` route needs ``Authorization: Bearer <token>``.
    ``max_request_bytes``: larger request bodies get 413.
    ``cleanup_interval_s``: how often the expiry task deactivates expired sessions.
    ``hard_delete_after_hours``: when set, each expiry pass also removes expired sessions and
    sessions inactive for this many hours (the store's hard cleanup).
    ``shutdown_grace_s``: after SIGTERM, how long running turns may take to finish before they are
    abandoned; the process exits about two seconds after that at most.
    ``allowed_hosts``: the host names (``Host`` header) the server answers to, ``*.example.com``
    and ``*`` allowed; unset, the loopback names on a loopback bind and any host otherwise.
    """

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    token: SecretStr | None = None
    max_request_bytes: int = Field(1024 * 1024, ge=1024)
    cleanup_interval_s: float = Field(300.0, gt=0)
    hard_delete_after_hours: float | None = Field(None, ge=0)
    shutdown_grace_s: float = Field(6.0, ge=0, le=60)
    allowed_hosts: list[str] | None = None


class Settings(_Section):
    """Everything Isotope reads from configuration."""

    postgres_sessions: bool = True
    postgresql: PostgresConfig = Field(default_factory=PostgresConfig)
    database_url: SecretStr | None = None
    data_dir: Path = Path("data")
    store: StoreConfig = Field(default_factory=StoreConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    log_level: str = "WARNING"

    @property
    def embedded(self) -> bool:
        """True when Isotope must run its own PostgreSQL."""
        return self.database_url is None and bool(self.postgresql.embedded)

    def conninfo(self) -> str | None:
        """The libpq connection string of the configured server, or None for the embedded one."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        if self.postgresql.embedded:
            return None
        pg = self.postgresql
        params: dict[str, Any] = {"host": ",".join(pg.hosts()), "port": ",".join(str(p) for p in pg.ports()),
                                  "user": pg.user, "dbname": pg.database,
                                  "target_session_attrs": pg.target_session_attrs}
        if pg.password is not None:
            params["password"] = pg.password.get_secret_value()
        params.update(pg.options)
        return make_conninfo(**{k: v for k, v in params.items() if v is not None})

    # Where each value came from, keyed by dotted path; filled by load_settings().
    sources: dict[str, str] = Field(default_factory=dict, exclude=True, repr=False)
    config_path: Path | None = Field(None, exclude=True)


ENV_OVERRIDES: dict[str, str] = {
    "ISOTOPE_DATABASE_URL": "database_url",
    "ISOTOPE_DATA_DIR": "data_dir",
    "ISOTOPE_POSTGRES_SESSIONS": "postgres_sessions",
    "ISOTOPE_API_TOKEN": "api.token",
    "ISOTOPE_LOG_LEVEL": "log_level",
}


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The YAML file Isotope reads: ``$ISOTOPE_CONFIG`` or ``config/config.yaml``."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("ISOTOPE_CONFIG") or DEFAULT_CONFIG_PATH)


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read, merge and validate the configuration.

    ``overrides`` (dotted keys) win over everything; the engine uses them for its ``config=`` dict.
    Raises :class:`ConfigError` with one line naming the key and the file.
    """
    environ = os.environ if environ is None else environ
    path = config_path(environ) if path is None else path
    explicit = path != DEFAULT_CONFIG_PATH or "ISOTOPE_CONFIG" in environ
    raw = _read_yaml(path, must_exist=explicit)
    sources: dict[str, str] = {}
    for key in _leaf_keys(raw):
        sources[key] = f"file {path}"
    for var, key in ENV_OVERRIDES.items():
        value = environ.get(var)
        if value:
            _set_dotted(raw, key, value)
            sources[key] = f"env {var}"
    if "database_url" in sources and "postgresql" in raw:
        # ISOTOPE_DATABASE_URL replaces the file's block as a whole.
        raw.pop("postgresql")
        sources = {k: v for k, v in sources.items() if not k.startswith("postgresql.")}
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
        sources[key] = "argument"
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    if settings.database_url is not None:
        _check_url(settings.database_url.get_secret_value(), path, sources.get("database_url", ""))
    settings.sources = sources
    settings.config_path = path if path.exists() else None
    return settings


def _read_yaml(path: Path, *, must_exist: bool) -> dict[str, Any]:
    if not path.exists():
        if must_exist:
            raise ConfigError(f"{path}: configuration file not found (set ISOTOPE_CONFIG or create it)")
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def _leaf_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and dotted not in ("postgresql.options",):
            keys.extend(_leaf_keys(value, dotted + "."))
        else:
            keys.append(dotted)
    return keys


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


_UNION_MEMBERS = frozenset({"int", "str", "list[int]", "list[str]"})


def _describe(exc: ValidationError, path: Path) -> str:
    """One line for the first problem: file, dotted key, what is wrong (never the value of a secret)."""
    err = exc.errors(include_url=False)[0]
    # A key that takes one value or a list reports which of the two it tried; name the key alone.
    key = ".".join(str(p) for p in err["loc"] if p not in _UNION_MEMBERS) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{path}: {key}: unknown key"
    secret = "password" in key or "token" in key or "url" in key or isinstance(err.get("input"), Mapping)
    shown = "" if secret else f" (got {err.get('input')!r})"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{path}: {key}: {msg}{shown}"


def _check_url(url: str, path: Path, source: str) -> None:
    try:
        conninfo_to_dict(url)
    except Exception:
        where = source or str(path)
        raise ConfigError(f"{where}: database_url: not a valid libpq URL or conninfo string") from None


def conninfo_password(conninfo: str | None) -> str | None:
    """The password inside a libpq connection string, if any (for scrubbing it from text)."""
    if not conninfo:
        return None
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except Exception:
        return None
    return str(password) if password else None


def redact_conninfo(conninfo: str) -> str:
    """The connection string with every secret-like option (password, sslpassword...) as ``***``."""
    return mask_conninfo(conninfo)
