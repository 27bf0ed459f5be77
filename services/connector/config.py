from pathlib import Path

from pydantic import Field, SecretStr

from services.common.settings import CommonSettings


class ConnectorSettings(CommonSettings):
    port: int = Field(8004, validation_alias="TONGBAN_CONNECTOR_PORT")
    # The providing department this connector answers for (its 统一社会信用代码).
    dept_code: str = Field("111101000000198608", validation_alias="TONGBAN_CONNECTOR_DEPT")
    # The backend file (数据源配置, README "Connector configuration"): which backend answers each
    # resource. Unset: the demo data answers every resource.
    backends_file: Path | None = Field(None, validation_alias="TONGBAN_CONNECTOR_BACKENDS")
    demo_population: int = Field(1000, ge=1, le=1_000_000, validation_alias="TONGBAN_CONNECTOR_DEMO_POPULATION")
    # How long a sent reply is kept to answer a redelivered request without a second look-up; it
    # holds personal data, so no longer than redelivery can happen (a day covers any outage).
    reply_retention_s: float = Field(
        86400.0, ge=60, le=30 * 86400, validation_alias="TONGBAN_CONNECTOR_REPLY_RETENTION_S"
    )
    # The provider's access log: a line per backend look-up naming its queries (never a subject).
    log_lookups: bool = Field(False, validation_alias="TONGBAN_CONNECTOR_LOG_LOOKUPS")
    # Key-encryption key: seals the reply-signing key at rest (services.common.keywrap), as the
    # gateway's keys are. Required; the provider's own, wherever its connector runs.
    key_encryption_key: SecretStr | None = Field(None, validation_alias="TONGBAN_KEY_ENCRYPTION_KEY")
