"""The gateway's problem catalogue (besides CommonProblem)."""

from services.common.errors import ProblemCode


class GatewayProblem(ProblemCode):
    UNKNOWN_PARENT = "unknown-parent", 422, "Unknown parent department"
    DEPARTMENT_EXISTS = "department-exists", 409, "Department exists"
    USER_EXISTS = "user-exists", 409, "User exists"
    TOO_MANY_SECRETS = "too-many-secrets", 409, "Two secrets are already active"
    LAST_SECRET = "last-secret", 409, "The only secret cannot be retired"
    INVALID_CREDENTIALS = "invalid-credentials", 401, "Login failed"
    ACCOUNT_DISABLED = "account-disabled", 403, "Account disabled"
    ACCOUNT_LOCKED = "account-locked", 429, "Account locked after repeated failures"
    CANNOT_DISABLE_SELF = "cannot-disable-self", 409, "You cannot disable yourself"
    UPSTREAM_TIMEOUT = "upstream-timeout", 504, "Service did not answer in time"
    UPSTREAM_UNAVAILABLE = "upstream-unavailable", 502, "Service unavailable"
    # RFC 6749 §5.2 token errors; their bodies also carry ``error`` and ``error_description``.
    OAUTH2_INVALID_REQUEST = "oauth2-invalid-request", 400, "OAuth2 token request failed"
    OAUTH2_INVALID_CLIENT = "oauth2-invalid-client", 401, "OAuth2 token request failed"
    OAUTH2_UNSUPPORTED_GRANT_TYPE = "oauth2-unsupported-grant-type", 400, "OAuth2 token request failed"
    OAUTH2_INVALID_SCOPE = "oauth2-invalid-scope", 400, "OAuth2 token request failed"
    OAUTH2_UNAUTHORIZED_CLIENT = "oauth2-unauthorized-client", 400, "OAuth2 token request failed"
    # A client locked after repeated wrong secrets; its body says error=invalid_client (RFC 6749 has no other).
    OAUTH2_CLIENT_LOCKED = "oauth2-client-locked", 429, "OAuth2 token request failed"
    # private_key_jwt registration (RFC 7523) and signing-key rotation.
    WRONG_AUTH_METHOD = "wrong-auth-method", 409, "The system uses another client authentication method"
    INVALID_JWKS_URI = "invalid-jwks-uri", 422, "The jwks_uri cannot be used"
    ROTATION_TOO_SOON = "rotation-too-soon", 409, "Tokens signed by the previous key may still be valid"
    RATE_LIMITED = "rate-limited", 429, "Too many requests"
    # 应答签名公钥: only a system holding the provider role signs answers.
    NOT_A_PROVIDER_SYSTEM = "not-a-provider-system", 409, "The system does not hold the provider role"
