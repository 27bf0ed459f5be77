"""The registry's problem catalogue: every error type its routes can answer (besides CommonProblem)."""

from services.common.errors import ProblemCode


class RegistryProblem(ProblemCode):
    CATEGORY_FULL = "category-full", 409, "No codes left in this category"
    INVALID_STATE = "invalid-state", 409, "Not allowed in this state"
    RESOURCE_NOT_PUBLISHED = "resource-not-published", 409, "Resource not published"
    UNKNOWN_CATEGORY = "unknown-category", 422, "Unknown class"
    CATEGORY_MISMATCH = "category-mismatch", 422, "Classification does not match the class"
    UNKNOWN_RELATED = "unknown-related", 422, "Unknown related resources"
    UNKNOWN_ITEMS = "unknown-items", 422, "Unknown information items"
    DUPLICATE_ITEMS = "duplicate-items", 422, "Duplicate items"
    UNKNOWN_CLIENT = "unknown-client", 422, "Unknown system"
    WIDENING = "widening", 422, "An approval may only narrow"
    GATEWAY_UNAVAILABLE = "gateway-unavailable", 503, "Identity service unavailable"
    NOT_SHARED = "not-shared", 422, "Resource is not shared"
    INVALID_CURSOR = "invalid-cursor", 422, "Invalid cursor"
    NEGATIVE_LISTED = "negative-listed", 422, "On the negative list (负面清单)"
    ALREADY_LISTED = "already-listed", 409, "Already on the negative list"
    SERVICE_ITEM_EXISTS = "service-item-exists", 409, "Service item code taken"
    DEMAND_TO_SELF = "demand-to-self", 422, "A demand goes to another department"
    MALFORMED_FILE = "malformed-file", 400, "File cannot be read"
    FILE_TOO_LARGE = "file-too-large", 413, "File too large"
    UNSUPPORTED_FILE = "unsupported-file", 415, "Not an .xlsx or .csv file"
    IMPORT_INVALID = "import-invalid", 422, "Rows not valid; nothing imported"
