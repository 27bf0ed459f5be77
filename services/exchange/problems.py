"""The exchange's problem catalogue. A denial's code is also the ``reason`` of its audit record."""

from services.common.errors import ProblemCode


class ExchangeProblem(ProblemCode):
    NOT_A_CONSUMER = "not-a-consumer", 403, "Not a consuming system"
    INVALID_SUBJECT = "invalid-subject", 422, "Invalid subject identifier"
    UNKNOWN_RESOURCE = "unknown-resource", 404, "Unknown resource"
    NO_GRANT = "no-grant", 403, "No grant"
    GRANT_REVOKED = "grant-revoked", 403, "Grant revoked"
    GRANT_EXPIRED = "grant-expired", 403, "Grant expired"
    PURPOSE_NOT_GRANTED = "purpose-not-granted", 403, "Purpose not granted"
    UNKNOWN_ITEMS = "unknown-items", 422, "Unknown information items"
    ITEM_NOT_GRANTED = "item-not-granted", 403, "Item not granted"
    QUOTA_EXCEEDED = "quota-exceeded", 429, "Daily quota used up"
    IDEMPOTENCY_IN_PROGRESS = "idempotency-in-progress", 409, "Same Idempotency-Key in flight"
    IDEMPOTENCY_KEY_REUSED = "idempotency-key-reused", 422, "Idempotency-Key reused"
    SUBJECT_NOT_FOUND = "subject-not-found", 404, "No record"
    PROVIDER_ERROR = "provider-error", 502, "Provider error"
    PROVIDER_TIMEOUT = "provider-timeout", 504, "Provider did not answer in time"
    # After the request was committed to be sent: never "nothing was changed" (see the README).
    QUERY_INTERRUPTED = "query-interrupted", 503, "Query sent, outcome not recorded"
    # Past the answer retention period the answer is gone; its outcome is still readable by id.
    ANSWER_PURGED = "answer-purged", 410, "Answer purged after its retention period"
    # An evidence bundle (免提交) for a service item the registry never published, or withdrew.
    UNKNOWN_SERVICE_ITEM = "unknown-service-item", 404, "Unknown service item"
    # Never an answer's status: why a bundle's government-issued material is unavailable.
    MATERIAL_NOT_MAPPED = "material-not-mapped", 404, "Material not mapped to a resource"
    BATCH_TOO_LARGE = "batch-too-large", 422, "Too many subjects in one batch"
    CALLBACK_URL_NOT_HTTPS = "callback-url-not-https", 422, "Callback URL is not https"
    CALLBACK_URL_NOT_REGISTERED = "callback-url-not-registered", 422, "Callback URL not registered"
    CALLBACKS_UNAVAILABLE = "callbacks-unavailable", 503, "Callbacks not configured"
    # The provider's SD-JWT did not verify with its published key, or answers another query.
    UNVERIFIABLE_ANSWER = "unverifiable-answer", 502, "Provider answer not verifiable"
    # Change feeds (库表共享, exchange/feeds.py).
    FEED_CURSOR_INVALID = "feed-cursor-invalid", 400, "Invalid feed cursor"
    FEED_CURSOR_EXPIRED = "feed-cursor-expired", 410, "Feed cursor past the topic's retention"
    FEEDS_UNAVAILABLE = "feeds-unavailable", 503, "Change feeds unavailable"


# Refusals before the provider is asked: each is audited as a denial with its code as the reason.
DENIALS = (
    ExchangeProblem.NOT_A_CONSUMER,
    ExchangeProblem.INVALID_SUBJECT,
    ExchangeProblem.UNKNOWN_RESOURCE,
    ExchangeProblem.NO_GRANT,
    ExchangeProblem.GRANT_REVOKED,
    ExchangeProblem.GRANT_EXPIRED,
    ExchangeProblem.PURPOSE_NOT_GRANTED,
    ExchangeProblem.UNKNOWN_ITEMS,
    ExchangeProblem.ITEM_NOT_GRANTED,
    ExchangeProblem.QUOTA_EXCEEDED,
    ExchangeProblem.BATCH_TOO_LARGE,
    ExchangeProblem.CALLBACK_URL_NOT_HTTPS,
    ExchangeProblem.CALLBACK_URL_NOT_REGISTERED,
)
