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
    # Key of the HMAC that names a data subject without naming it (exchange and audit share it).
    subject_hash_key: str = DEVELOPMENT_SUBJECT_KEY
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

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @model_validator(mode="after")
    def refuse_development_secrets(self) -> "CommonSettings":
        if self.environment == "production" and self.subject_hash_key == DEVELOPMENT_SUBJECT_KEY:
            raise ValueError("TONGBAN_SUBJECT_HASH_KEY must be set to a secret of your own in production")
        return self

    def topic(self, name: str) -> str:
        """A topic's full name, e.g. ``topic("audit.events")`` → ``tongban.audit.events``."""
        return f"{self.topic_prefix}{name}"
