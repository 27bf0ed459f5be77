"""Settings shared by every service; each service's ``config.py`` extends :class:`CommonSettings`.

Everything is read from the environment with the prefix ``TONGBAN_`` (``TONGBAN_DATABASE_URL``...).
``make`` targets also load ``var/infra.env`` written by ``deploy/local/infra.py``.
"""

from functools import cached_property
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_SUBJECT_KEY = "development-only-subject-key"

Environment = Literal["development", "test", "production"]


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TONGBAN_", extra="ignore", populate_by_name=True)

    environment: Environment = "development"
    database_url: str = "postgresql+asyncpg://postgres@/postgres?host=var/pg"
    database_pool_size: int = 10
    bus: Literal["kafka", "memory"] = "kafka"
    kafka_bootstrap: str = "127.0.0.1:9092"
    # TLS to Kafka (the Strimzi listener of deploy/k8s asks for a client certificate): PEM files of
    # the cluster's CA and, for mutual TLS, the client's certificate and key.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL"] = "PLAINTEXT"
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    # A consumer showing a stall's symptom this long is closed and made anew (services/common/bus.py).
    kafka_stall_after_s: float = Field(default=60.0, ge=30.0, le=3600.0)
    topic_prefix: str = "tongban."
    host: str = "127.0.0.1"
    # Where every service fetches the gateway's JWKS to verify bearer tokens itself.
    gateway_url: str = "http://127.0.0.1:8000"
    jwt_issuer: str = "tongban"
    jwt_audience: str = "tongban"
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # The body of a file upload (http.UPLOAD_PREFIXES: the registry's .xlsx / .csv import).
    max_upload_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    log_level: str = "INFO"
    log_json: bool = True
    # Key of the HMAC that names a data subject without naming it (exchange and audit share it),
    # and its id, which every audit record keeps. Rotating: give the new key a new id and move the
    # old one to subject_hash_retired_keys (id → key), which audit still searches with.
    subject_hash_key: str = DEVELOPMENT_SUBJECT_KEY
    subject_hash_key_id: str = Field("k1", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    subject_hash_retired_keys: dict[str, str] = Field(default_factory=dict)
    # The zone business dates are counted in (application due dates, daily quotas).
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)") from err
        return value

    @property
    def subject_hash_keys(self) -> dict[str, str]:
        """Every subject key by id, the current one first: searching hashes under each."""
        return {self.subject_hash_key_id: self.subject_hash_key} | {
            k: v for k, v in self.subject_hash_retired_keys.items() if k != self.subject_hash_key_id
        }

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @model_validator(mode="after")
    def kafka_tls_complete(self) -> "CommonSettings":
        if self.kafka_security_protocol == "SSL" and not self.kafka_ssl_cafile:
            raise ValueError("TONGBAN_KAFKA_SECURITY_PROTOCOL=SSL needs TONGBAN_KAFKA_SSL_CAFILE (the cluster's CA)")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("TONGBAN_KAFKA_SSL_CERTFILE and TONGBAN_KAFKA_SSL_KEYFILE go together")
        return self

    @model_validator(mode="after")
    def refuse_development_secrets(self) -> "CommonSettings":
        if self.environment == "production" and self.subject_hash_key == DEVELOPMENT_SUBJECT_KEY:
            raise ValueError("TONGBAN_SUBJECT_HASH_KEY must be set to a secret of your own in production")
        return self

    def topic(self, name: str) -> str:
        """A topic's full name, e.g. ``topic("audit.events")`` → ``tongban.audit.events``."""
        return f"{self.topic_prefix}{name}"
