"""The audit service's problem catalogue (its own codes; the common ones are in
``services.common.errors.CommonProblem``)."""

from services.common.errors import ProblemCode


class AuditProblem(ProblemCode):
    INVALID_SUBJECT = "invalid-subject", 422, "Invalid subject identifier"
