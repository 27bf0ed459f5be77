from pydantic import Field, SecretStr

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
    # 答复保留期: answers carry personal data, so they are kept this long after the query, then
    # purged (the query's outcome stays); a replayed Idempotency-Key then gets 410 answer-purged.
    answer_retention_s: float = Field(
        30 * 86400, ge=1, le=10 * 365 * 86400, validation_alias="TONGBAN_EXCHANGE_ANSWER_RETENTION_S"
    )
    answer_purge_every_s: float = Field(
        300.0, ge=0.1, le=86400, validation_alias="TONGBAN_EXCHANGE_ANSWER_PURGE_EVERY_S"
    )
    answer_purge_batch: int = Field(1000, ge=1, le=100_000, validation_alias="TONGBAN_EXCHANGE_ANSWER_PURGE_BATCH")
    # The query ledger (台账, exchange/ledger.py): the ids of the queries closed in each window of
    # this length, published for the audit service's completeness check.
    ledger_window_s: float = Field(60.0, ge=1, le=3600, validation_alias="TONGBAN_EXCHANGE_LEDGER_WINDOW_S")
    # An evidence bundle (免提交) asks the providers of its materials at once, at most this many at
    # a time per bundle: a service item with many materials must not take the whole query path.
    evidence_concurrency: int = Field(8, ge=1, le=100, validation_alias="TONGBAN_EXCHANGE_EVIDENCE_CONCURRENCY")
    # 批量查询: the most subjects one batch may ask about, and how many of them are in flight at once.
    batch_max_subjects: int = Field(100, ge=1, le=10_000, validation_alias="TONGBAN_EXCHANGE_BATCH_MAX_SUBJECTS")
    batch_concurrency: int = Field(32, ge=1, le=1000, validation_alias="TONGBAN_EXCHANGE_BATCH_CONCURRENCY")
    # 回调 (exchange/callbacks.py): the signed POST of an async query's outcome to its system's
    # registered https URL, retried with exponential backoff (base, cap) up to max attempts.
    callback_timeout_s: float = Field(5.0, gt=0, le=60, validation_alias="TONGBAN_EXCHANGE_CALLBACK_TIMEOUT_S")
    callback_backoff_s: float = Field(1.0, gt=0, le=3600, validation_alias="TONGBAN_EXCHANGE_CALLBACK_BACKOFF_S")
    callback_backoff_max_s: float = Field(
        600.0, gt=0, le=86400, validation_alias="TONGBAN_EXCHANGE_CALLBACK_BACKOFF_MAX_S"
    )
    callback_max_attempts: int = Field(10, ge=1, le=100, validation_alias="TONGBAN_EXCHANGE_CALLBACK_MAX_ATTEMPTS")
    callback_poll_s: float = Field(1.0, gt=0, le=60, validation_alias="TONGBAN_EXCHANGE_CALLBACK_POLL_S")
    # Extra trust anchors (PEM) for callback servers, besides the system's: a government private CA.
    callback_ca_file: str | None = Field(None, validation_alias="TONGBAN_EXCHANGE_CALLBACK_CA_FILE")
    # Seals the callback signing key (exchange.signing_keys), as the gateway's and connector's keys.
    key_encryption_key: SecretStr | None = Field(None, validation_alias="TONGBAN_KEY_ENCRYPTION_KEY")
    # A provider's answer-signing keys are those its provider systems registered at the gateway
    # (TONGBAN_GATEWAY_URL, GET /v1/departments/{code}/answer-keys), reused this long; a kid not
    # known yet refetches them sooner (answers.ProviderKeys).
    provider_keys_cache_s: float = Field(
        300.0, ge=0, le=86400, validation_alias="TONGBAN_EXCHANGE_PROVIDER_KEYS_CACHE_S"
    )
    # Change feeds (库表共享, exchange/feeds.py): how long a page waits for a change (long-poll)
    # when the consumer names no ``wait``, the longest it may name, and the most changes a page holds.
    feed_wait_s: float = Field(20.0, ge=0, le=120, validation_alias="TONGBAN_EXCHANGE_FEED_WAIT_S")
    # Below the gateway's upstream timeout (TONGBAN_UPSTREAM_TIMEOUT_S, 30 s), or a long-poll
    # through it would end in 504 instead of an empty page.
    feed_max_wait_s: float = Field(25.0, ge=0, le=120, validation_alias="TONGBAN_EXCHANGE_FEED_MAX_WAIT_S")
    feed_page_max: int = Field(500, ge=1, le=10_000, validation_alias="TONGBAN_EXCHANGE_FEED_PAGE_MAX")
    # Pages reading Kafka at once on a replica (each holds a connection to the broker while it
    # waits); past this a page is 503 feeds-unavailable with Retry-After, not another connection.
    feed_max_reads: int = Field(64, ge=1, le=10_000, validation_alias="TONGBAN_EXCHANGE_FEED_MAX_READS")
