"""Gateway API schemas (separate from the tables)."""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, Field, model_validator

from services.common.identifiers import (
    InvalidIdentifier,
    check_department_region,
    validate_credit_code,
    validate_region_code,
)
from services.common.schemas import Strict
from services.gateway.assertions import answer_jwks_problem, jwks_problem


def _credit_code(value: str) -> str:
    try:
        return validate_credit_code(value)
    except InvalidIdentifier as err:
        raise ValueError(str(err)) from err


def _region_code(value: str) -> str:
    try:
        return validate_region_code(value, current=True)  # a new department sits in a division that exists today
    except InvalidIdentifier as err:
        raise ValueError(str(err)) from err


def _username(value: str) -> str:
    # "sys-…" is the namespace of client ids (gateway.service.CLIENT_ID_PREFIX): a person's name
    # may never equal a system's client id.
    if value.lower().startswith("sys-"):
        raise ValueError("usernames may not start with 'sys-' (reserved for systems' client ids)")
    return value


# Password policy (密码策略) for new users: long enough, of several kinds of character, not the name.
PASSWORD_MIN_LENGTH = 12
PASSWORD_MIN_CLASSES = 3


def _is_symbol(c: str) -> bool:
    return not c.isalnum()


PASSWORD_CLASSES: dict[str, Callable[[str], bool]] = {
    "lower-case letters": str.islower,
    "upper-case letters": str.isupper,
    "digits": str.isdigit,
    "symbols": _is_symbol,
}


def password_policy_problem(password: str, username: str) -> str | None:
    """Why ``password`` is not acceptable for ``username``, or None when it is."""
    kinds = [name for name, test in PASSWORD_CLASSES.items() if any(test(c) for c in password)]
    rule = (
        f"密码至少 {PASSWORD_MIN_LENGTH} 个字符，包含大写字母、小写字母、数字、符号中的至少 {PASSWORD_MIN_CLASSES} 类，"
        f"且不含用户名 (a password needs at least {PASSWORD_MIN_LENGTH} characters, at least "
        f"{PASSWORD_MIN_CLASSES} of: {', '.join(PASSWORD_CLASSES)}, and must not contain the username)"
    )
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"{rule}: this one has {len(password)} characters"
    if len(kinds) < PASSWORD_MIN_CLASSES:
        return f"{rule}: this one has only {', '.join(kinds) or 'no letters, digits or symbols'}"
    if username.lower() in password.lower():
        return f"{rule}: this one contains the username"
    return None


Username = Annotated[str, Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"), AfterValidator(_username)]
CreditCode = Annotated[str, Field(min_length=18, max_length=18), AfterValidator(_credit_code)]
RegionCode = Annotated[str, Field(min_length=6, max_length=6), AfterValidator(_region_code)]
DeptLevel = Literal["national", "province", "city", "county"]
SystemRole = Literal["consumer", "provider", "citizen_portal"]
UserRole = Literal["platform_admin", "data_admin", "approver", "auditor"]


class DepartmentCreate(Strict):
    code: CreditCode
    name: str = Field(min_length=2, max_length=100)
    region_code: RegionCode
    level: DeptLevel
    parent_code: CreditCode | None = None

    @model_validator(mode="after")
    def _region_agrees_with_code(self) -> Self:
        try:
            check_department_region(self.code, self.region_code)
        except InvalidIdentifier as err:
            raise ValueError(str(err)) from err
        return self


class DepartmentPublic(BaseModel):
    code: str
    name: str
    region_code: str
    level: str
    parent_code: str | None
    status: Literal["active", "disabled"] = "active"


class DepartmentList(BaseModel):
    items: list[DepartmentPublic]
    next_cursor: str | None


def _jwks(value: dict[str, Any]) -> dict[str, Any]:
    problem = jwks_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


AuthMethodName = Literal["client_secret_basic", "private_key_jwt"]
Jwks = Annotated[
    dict[str, Any],
    AfterValidator(_jwks),
    Field(description='public keys (RFC 7517): {"keys": [...]}, 1 to 10, each with a kid; EC, OKP or RSA ≥ 2048'),
]
JwksUri = Annotated[str, Field(min_length=9, max_length=2048, description="https URL of the system's JWKS")]


def _answer_jwks(value: dict[str, Any]) -> dict[str, Any]:
    problem = answer_jwks_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


AnswerJwks = Annotated[
    dict[str, Any],
    AfterValidator(_answer_jwks),
    Field(description='Ed25519 public keys (RFC 8037 OKP JWKs): {"keys": [...]}, 1 to 10, each with a kid'),
]


class AnswerKeysBody(Strict):
    """A provider system's answer-signing public keys (应答签名公钥): every key an answer still to
    be verified was signed with (to rotate: register old and new; drop the old once no answer
    signed with it needs verifying)."""

    jwks: AnswerJwks


class AnswerKeysPublic(BaseModel):
    """A provider system's registered answer-signing keys (None: none registered)."""

    client_id: str
    jwks: dict[str, Any] | None


class ClientKeysBody(Strict):
    """A private_key_jwt system's public keys: exactly one of ``jwks`` and ``jwks_uri``."""

    jwks: Jwks | None = None
    jwks_uri: JwksUri | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.jwks is None) == (self.jwks_uri is None):
            raise ValueError("give exactly one of jwks and jwks_uri")
        return self


class SystemCreate(Strict):
    name: str = Field(min_length=2, max_length=100)
    roles: list[SystemRole] = Field(min_length=1, max_length=3)
    auth_method: AuthMethodName = "client_secret_basic"
    # private_key_jwt only (RFC 7523): exactly one of them.
    jwks: Jwks | None = None
    jwks_uri: JwksUri | None = None

    # RFC 8705 §3.4: bind this system's tokens to the client certificate it presents (mutual TLS).
    tls_client_certificate_bound_access_tokens: bool = False

    @model_validator(mode="after")
    def _keys_go_with_private_key_jwt(self) -> Self:
        if self.auth_method == "private_key_jwt" and (self.jwks is None) == (self.jwks_uri is None):
            raise ValueError("private_key_jwt needs exactly one of jwks and jwks_uri")
        if self.auth_method == "client_secret_basic" and (self.jwks is not None or self.jwks_uri is not None):
            raise ValueError("jwks and jwks_uri go with auth_method private_key_jwt only")
        return self


class SystemCreated(BaseModel):
    client_id: str
    client_secret: str | None = Field(description="Shown once; only its hash is stored. None for private_key_jwt.")
    dept: str
    name: str
    roles: list[str]
    auth_method: str
    jwks_uri: str | None = None
    tls_client_certificate_bound_access_tokens: bool = False


class SystemPublic(BaseModel):
    client_id: str
    dept: str
    name: str
    roles: list[str]
    auth_method: str
    jwks_uri: str | None = None
    tls_client_certificate_bound_access_tokens: bool = False
    status: Literal["active", "disabled"] = "active"
    locked_until: datetime | None = Field(
        None, description="The end of its lockout after failed authentications (锁定), if it is locked out now"
    )


class SystemList(BaseModel):
    """Systems (业务系统): every department's for a platform administrator, else the person's own."""

    items: list[SystemPublic]
    next_cursor: str | None


class ClientKeysPublic(BaseModel):
    """A private_key_jwt system's registered keys: the JWKS given, or the jwks_uri."""

    client_id: str
    jwks: dict[str, Any] | None
    jwks_uri: str | None


class SigningKeyPublic(BaseModel):
    kid: str
    state: Literal["next", "current", "previous"]
    state_since: datetime
    created_at: datetime


class SigningKeyList(BaseModel):
    """The token-signing keys: next, current, previous (the JWKS has their public halves)."""

    items: list[SigningKeyPublic]


class SecretCreated(BaseModel):
    id: str
    client_secret: str = Field(description="Shown once; only its hash is stored.")
    created_at: datetime


class SecretPublic(BaseModel):
    id: str
    created_at: datetime
    last_used_at: datetime | None


class SecretList(BaseModel):
    items: list[SecretPublic]


class UserCreate(Strict):
    username: Username
    password: str = Field(max_length=128, description=f"at least {PASSWORD_MIN_LENGTH} characters, of 3 kinds")
    department: CreditCode
    roles: list[UserRole] = Field(min_length=1, max_length=4)

    @model_validator(mode="after")
    def _password_policy(self) -> Self:
        problem = password_policy_problem(self.password, self.username)
        if problem is not None:
            raise ValueError(problem)
        return self


class UserPublic(BaseModel):
    username: str
    department: str
    roles: list[str]


class UserRoles(Strict):
    """A person's roles, all of them (重新授予角色): they replace the ones held. A token already
    issued keeps its roles until it expires; the next one carries these."""

    roles: list[UserRole] = Field(min_length=1, max_length=4)


class UserAccount(UserPublic):
    """A person's account as a platform administrator sees it: whether it is disabled or locked."""

    status: Literal["active", "disabled"]
    locked_until: datetime | None = Field(description="while locked out after repeated failed logins (锁定)")
    created_at: datetime


class UserList(BaseModel):
    items: list[UserAccount]
    next_cursor: str | None


class Login(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=128)


class StatusPublic(BaseModel):
    id: str = Field(description="department code, client id or username")
    status: Literal["active", "disabled"]


class Introspection(BaseModel):
    """RFC 7662 §2.2: only ``active`` when the token is not (or no longer) good."""

    active: bool
    token_type: str | None = None
    scope: str | None = None
    client_id: str | None = None
    username: str | None = None
    sub: str | None = None
    aud: str | list[str] | None = None
    iss: str | None = None
    exp: int | None = None
    iat: int | None = None
    jti: str | None = None
    principal_type: str | None = None
    dept: str | None = None
    cnf: dict[str, str] | None = Field(None, description='RFC 8705 §3.2: {"x5t#S256": …} of a certificate-bound token')


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    scope: str


class RateLimitSet(Strict):
    """A system's own rate limit (限流额度): a bucket of ``burst`` requests refilled at ``rate_per_s``."""

    rate_per_s: float = Field(gt=0, le=1e6, allow_inf_nan=False)
    burst: int = Field(ge=1, le=10**7)


class RateLimitPublic(BaseModel):
    client_id: str
    rate_per_s: float
    burst: int
    default: bool = Field(description="true: the platform's default (no limit of its own)")
