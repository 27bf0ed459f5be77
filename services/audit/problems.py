"""The audit service's problem catalogue (its own codes; the common ones are in
``services.common.errors.CommonProblem``)."""

from services.common.errors import ProblemCode


class AuditProblem(ProblemCode):
    INVALID_SUBJECT = "invalid-subject", 422, "Invalid subject identifier"
    UNKNOWN_EVENT = "unknown-event", 404, "Unknown audit event"
    NO_CHECKPOINT = "no-checkpoint", 404, "No checkpoint yet"
    TREE_SIZE = "tree-size-out-of-range", 422, "Tree size out of range"
    CONSISTENCY_RANGE = "consistency-range-invalid", 422, "Invalid consistency range"
    TIME_RANGE = "time-range-invalid", 422, "Invalid time range"
    UNKNOWN_FILTER = "unknown-filter", 422, "Unknown query parameter"
    INVALID_CURSOR = "invalid-cursor", 422, "Invalid cursor"
    UNKNOWN_ALERT = "unknown-alert", 404, "Unknown alert"
    ALERT_ACKNOWLEDGED = "alert-already-acknowledged", 409, "Alert already acknowledged"
    UNKNOWN_WITNESS = "unknown-witness", 422, "Not a configured witness key"
    BAD_COSIGNATURE = "bad-cosignature", 422, "Cosignature does not verify"
    STALE_COSIGNATURE = "stale-cosignature", 409, "Cosignature older than the witness's last one"
    EXPORT_RANGE = "export-range-invalid", 422, "Invalid export range"
    ARCHIVED = "archived", 410, "Archived by the retention policy"
