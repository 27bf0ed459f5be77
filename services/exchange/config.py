from pydantic import Field

from services.common.settings import CommonSettings


class ExchangeSettings(CommonSettings):
    port: int = Field(8002, validation_alias="TONGBAN_EXCHANGE_PORT")
    default_timeout_ms: int = Field(5000, ge=100, le=60000, validation_alias="TONGBAN_EXCHANGE_DEFAULT_TIMEOUT_MS")
    # How long a grant look-up is reused; a revocation takes at most this long to bite.
    grant_cache_s: float = Field(2.0, ge=0, le=60, validation_alias="TONGBAN_EXCHANGE_GRANT_CACHE_S")
    max_timeout_ms: int = Field(30000, ge=100, le=120000, validation_alias="TONGBAN_EXCHANGE_MAX_TIMEOUT_MS")
    # A query still pending this long after its deadline was abandoned by a replica that died
    # while waiting; it is closed as a timeout (and audited). Swept every third of this.
    abandoned_after_s: float = Field(30.0, ge=1, le=3600, validation_alias="TONGBAN_EXCHANGE_ABANDONED_AFTER_S")
    # Where each provider's connector publishes its answer-signing keys (credit code → JWKS URL);
    # a provider not listed is asked at TONGBAN_CONNECTOR_URL (the one connector of make run).
    provider_jwks: dict[str, str] = Field(default_factory=dict, validation_alias="TONGBAN_EXCHANGE_PROVIDER_JWKS")
    connector_url: str = Field("http://127.0.0.1:8004", validation_alias="TONGBAN_CONNECTOR_URL")
