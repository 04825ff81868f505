"""One typed `Settings`, read from the environment (every variable: docs/configuration.md).

Nothing here connects to anything; `bootstrap` builds the adapters from a `Settings`.
A bad value stops start-up with one line naming the variable (`SettingsError`).
"""

from __future__ import annotations

import os
import socket
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from banking_es.domain.money import is_currency

DEFAULT_SQLITE_URL = "sqlite:///./data/banking.db"


class SettingsError(Exception):
    """A configuration variable has a value the service cannot run with."""


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"
    TEST = "test"


class Settings(BaseSettings):
    """Every configuration variable of docs/configuration.md, typed, with its default."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str = DEFAULT_SQLITE_URL
    database_pool_size: int = Field(20, ge=2, le=1000)
    redis_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    kafka_topic_prefix: str = "banking-es"
    kafka_idempotent_producer: Literal["true", "false", "auto"] = "auto"
    kafka_topic_partitions: int = Field(6, ge=1, le=1000)
    kafka_replication_factor: int = Field(1, ge=1, le=10)
    kafka_relay_lease_ttl: float = Field(10.0, gt=0)

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    banking_env: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path("./data")

    jwt_secret: str | None = None
    refresh_token_secret: str | None = None
    access_token_expiry: int = Field(3600, ge=1)
    refresh_token_expiry: int = Field(604800, ge=1)
    max_login_attempts: int = Field(5, ge=1)
    lockout_duration: int = Field(300, ge=1)
    password_reset_ttl: int = Field(1800, ge=1)
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_cost: int = Field(65536, ge=8)

    smtp_url: str | None = None
    mail_from: str = Field("banking-es@localhost", pattern=r"^[^@\s<>]+@[^@\s<>]+$")
    password_reset_enabled: bool = True
    mail_max_attempts: int = Field(8, ge=1, le=100)
    mail_retry_base_s: float = Field(30.0, gt=0)

    rate_limit_enabled: bool = True
    rate_limit_per_minute: int = Field(60, ge=1)
    rate_limit_burst: int = Field(10, ge=0)
    rate_limit_per_client_per_minute: int | None = Field(None, ge=1)
    rate_limit_per_ip_per_minute: int = Field(600, ge=1)
    auth_rate_limit_per_minute: int = Field(10, ge=1)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    rate_limit_max_clients: int = Field(10000, ge=1)

    cache_l1_size: int = Field(10000, ge=1)
    cache_ttl: int = Field(300, ge=1)
    cache_eviction: Literal["lru", "lfu", "ttl"] = "lru"
    redis_timeout_ms: int = Field(100, ge=1)
    redis_breaker_failures: int = Field(5, ge=1)
    redis_breaker_reset: float = Field(2.0, gt=0)
    redis_key_prefix: str = Field("banking-es", min_length=1)
    cache_warm_accounts: int = Field(1000, ge=0)

    batch_max_size: int = Field(500, ge=1, le=10000)
    batch_max_wait_ms: float = Field(2.0, ge=0, le=1000)
    snapshot_threshold: int = Field(100, ge=1)
    command_retry_budget_s: float = Field(5.0, gt=0)

    projection_lag_degraded: float = Field(30.0, gt=0)
    outbox_age_degraded: float = Field(60.0, gt=0)
    projection_poll_interval_ms: float = Field(100.0, gt=0)
    idempotency_ttl_hours: float = Field(24.0, gt=0)
    dlq_max_attempts: int = Field(5, ge=1)

    instance_id: str | None = Field(None, min_length=1, max_length=200)
    instance_url: str | None = Field(None, pattern=r"^https?://[^\s/]+$")
    cluster_secret: str | None = None
    shard_count: int = Field(16, ge=1, le=4096)
    shard_lease_ttl: float = Field(10.0, ge=0.5, le=3600)
    shard_rebalance_interval: float = Field(60.0, ge=1, le=86400)
    shard_rebalance_threshold: float = Field(0.2, ge=0, le=10)
    shards_min_per_instance: int = Field(1, ge=0, le=4096)
    shards_max_per_instance: int | None = Field(None, ge=1, le=4096)

    default_currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    bank_name: str = Field("banking-es", min_length=1, max_length=100)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["console", "json"] | None = None
    otel_exporter_otlp_endpoint: str | None = None

    @field_validator("default_currency")
    @classmethod
    def _active_currency(cls, value: str) -> str:
        # The same check as opening an account: a default no account could use is an error.
        if not is_currency(value):
            raise ValueError("not an active ISO 4217 currency code (such as USD, EUR, JPY)")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            port, parts = -1, urlsplit("")
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname or port == -1:
            raise ValueError("must be smtp://[user:pass@]host[:port] or smtps://...")
        return value

    @model_validator(mode="after")
    def _shard_bounds(self) -> Settings:
        most = self.shards_max_per_instance
        if most is not None and most < self.shards_min_per_instance:
            raise ValueError(
                "SHARDS_MAX_PER_INSTANCE must be at least SHARDS_MIN_PER_INSTANCE"
                f" ({most} < {self.shards_min_per_instance})"
            )
        return self

    @cached_property
    def effective_instance_id(self) -> str:
        """`INSTANCE_ID`, or this host's name and process id (once: every command answer
        names it)."""
        return self.instance_id or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def effective_instance_url(self) -> str:
        """`INSTANCE_URL`, or where this server listens."""
        return self.instance_url or f"http://{self.host}:{self.port}"

    @property
    def backend(self) -> Literal["sqlite", "postgres"]:
        return "sqlite" if self.database_url.startswith("sqlite://") else "postgres"

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file of `sqlite:///relative` or `sqlite:////absolute` URLs."""
        return Path(self.database_url.removeprefix("sqlite://").removeprefix("/") or "banking.db")

    @property
    def effective_log_format(self) -> str:
        if self.log_format:
            return self.log_format
        return "json" if self.banking_env is Environment.PRODUCTION else "console"


_SECRET_VARIABLES = frozenset({"SMTP_URL", "JWT_SECRET", "REFRESH_TOKEN_SECRET", "CLUSTER_SECRET"})


def load_settings(**overrides: object) -> Settings:
    """Read the environment; turn pydantic's report into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "configuration"
            if not error["loc"]:  # a check of several variables names them in its message
                lines.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            # A URL or secret may hold a password: name the variable, never echo it.
            shown = "" if name in _SECRET_VARIABLES else f" (got {error.get('input')!r})"
            lines.append(f"{name}: {error['msg']}{shown}")
        raise SettingsError("invalid configuration: " + "; ".join(lines)) from None
