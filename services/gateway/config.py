from functools import cached_property

from pydantic import Field, SecretStr, field_validator

from services.common.settings import CommonSettings
from services.gateway import mtls
from services.gateway.upstreams import replica_urls


class GatewaySettings(CommonSettings):
    port: int = Field(8000, validation_alias="TONGBAN_GATEWAY_PORT")
    public_url: str = Field("http://127.0.0.1:8000", validation_alias="TONGBAN_GATEWAY_PUBLIC_URL")
    # Each service's replicas: one base URL, or several separated by commas (upstreams.replica_urls).
    registry_url: str = Field("http://127.0.0.1:8001", validation_alias="TONGBAN_REGISTRY_URL")
    exchange_url: str = Field("http://127.0.0.1:8002", validation_alias="TONGBAN_EXCHANGE_URL")
    audit_url: str = Field("http://127.0.0.1:8003", validation_alias="TONGBAN_AUDIT_URL")
    # The console's pages (services/console), served at /console on the gateway's address.
    console_url: str = Field("http://127.0.0.1:8005", validation_alias="TONGBAN_CONSOLE_URL")
    token_ttl_s: int = Field(900, ge=60, le=86400, validation_alias="TONGBAN_TOKEN_TTL_S")
    upstream_timeout_s: float = Field(30.0, validation_alias="TONGBAN_UPSTREAM_TIMEOUT_S")
    # A replica that cannot be reached gets no requests for this long (passive health check).
    upstream_cooloff_s: float = Field(10.0, gt=0, le=3600, validation_alias="TONGBAN_UPSTREAM_COOLOFF_S")
    # Connecting to a replica takes well under this on a working network: past it, try the next.
    upstream_connect_timeout_s: float = Field(2.0, gt=0, le=60, validation_alias="TONGBAN_UPSTREAM_CONNECT_TIMEOUT_S")
    # Lockout (锁定): this many failed logins (or client secrets) in a row lock the name for
    # lockout_s seconds; failures older than lockout_s are forgotten. Counted in PostgreSQL,
    # shared by every replica.
    lockout_threshold: int = Field(5, ge=1, le=1000, validation_alias="TONGBAN_LOCKOUT_THRESHOLD")
    lockout_s: int = Field(900, ge=1, le=7 * 86400, validation_alias="TONGBAN_LOCKOUT_S")
    # Rate limits (限流), token buckets shared by every replica (ratelimit.py): a bucket holds at
    # most *_burst requests and refills at *_per_s. Proxied requests, per system or person (a
    # system may have its own, set by a platform administrator); the token and introspection
    # endpoints per client id, the login endpoint per username, and both per source address.
    rate_limit_per_s: float = Field(200.0, gt=0, le=1e6, validation_alias="TONGBAN_RATE_LIMIT_PER_S")
    rate_limit_burst: int = Field(400, ge=1, le=10**7, validation_alias="TONGBAN_RATE_LIMIT_BURST")
    # Proxied requests' tokens are taken a few at a time (a lease, ratelimit.py) and spent by the
    # replica for at most rate_limit_lease_s: the bound on how far the shared limit may be off.
    # 0: every request asks PostgreSQL.
    rate_limit_lease_s: float = Field(0.25, ge=0, le=10, validation_alias="TONGBAN_RATE_LIMIT_LEASE_S")
    rate_limit_lease_max: int = Field(100, ge=1, le=10**6, validation_alias="TONGBAN_RATE_LIMIT_LEASE_MAX")
    token_rate_limit_per_s: float = Field(1.0, gt=0, le=1e6, validation_alias="TONGBAN_TOKEN_RATE_LIMIT_PER_S")
    token_rate_limit_burst: int = Field(30, ge=1, le=10**7, validation_alias="TONGBAN_TOKEN_RATE_LIMIT_BURST")
    login_rate_limit_per_s: float = Field(0.5, gt=0, le=1e6, validation_alias="TONGBAN_LOGIN_RATE_LIMIT_PER_S")
    login_rate_limit_burst: int = Field(20, ge=1, le=10**7, validation_alias="TONGBAN_LOGIN_RATE_LIMIT_BURST")
    source_rate_limit_per_s: float = Field(10.0, gt=0, le=1e6, validation_alias="TONGBAN_SOURCE_RATE_LIMIT_PER_S")
    source_rate_limit_burst: int = Field(200, ge=1, le=10**7, validation_alias="TONGBAN_SOURCE_RATE_LIMIT_BURST")
    # Creates user "admin" (platform_admin) on first start when no user exists. Unset: no admin.
    bootstrap_admin_password: str | None = Field(None, validation_alias="TONGBAN_BOOTSTRAP_ADMIN_PASSWORD")
    # The department the platform operator (and its admin) belongs to.
    platform_dept_code: str = Field("11110100MB00000001", validation_alias="TONGBAN_PLATFORM_DEPT_CODE")
    platform_dept_name: str = Field("市大数据管理局", validation_alias="TONGBAN_PLATFORM_DEPT_NAME")
    # Key-encryption key (KEK, 密钥加密密钥): seals the token-signing private keys at rest
    # (services.common.keywrap; `python -m services.common.keywrap` prints a new one). Required.
    key_encryption_key: SecretStr | None = Field(None, validation_alias="TONGBAN_KEY_ENCRYPTION_KEY")
    # How often each replica re-reads the signing keys (a rotation elsewhere reaches it within
    # this) and purges expired client assertions.
    key_refresh_s: float = Field(10.0, gt=0, le=3600, validation_alias="TONGBAN_KEY_REFRESH_S")
    # private_key_jwt (RFC 7523): the longest an assertion may live (exp - now, and exp - iat).
    # One hour, the bound most servers use: authlib's PrivateKeyJWT signs one-hour assertions.
    client_assertion_max_lifetime_s: int = Field(
        3600, ge=30, le=3600, validation_alias="TONGBAN_CLIENT_ASSERTION_MAX_LIFETIME_S"
    )
    # A system's jwks_uri: fetched with this timeout and size cap, cached this long (re-fetched
    # earlier when an assertion names an unknown kid, at most every jwks_uri_refetch_s).
    jwks_uri_timeout_s: float = Field(5.0, gt=0, le=60, validation_alias="TONGBAN_JWKS_URI_TIMEOUT_S")
    jwks_uri_max_bytes: int = Field(64 * 1024, ge=1024, le=1024 * 1024, validation_alias="TONGBAN_JWKS_URI_MAX_BYTES")
    jwks_uri_cache_s: float = Field(300.0, ge=0, le=86400, validation_alias="TONGBAN_JWKS_URI_CACHE_S")
    jwks_uri_refetch_s: float = Field(10.0, ge=0, le=3600, validation_alias="TONGBAN_JWKS_URI_REFETCH_S")
    # https only, unless set (tests serve a JWKS over plain http on 127.0.0.1).
    jwks_uri_allow_http: bool = Field(False, validation_alias="TONGBAN_JWKS_URI_ALLOW_HTTP")
    # The hosts a jwks_uri may name (comma-separated; ".example.gov.cn" also allows its subdomains).
    # Empty: no jwks_uri is accepted — the gateway fetches what a system registers, so the
    # operator says where it may go (no SSRF into the platform's own network).
    jwks_uri_hosts: str = Field("", validation_alias="TONGBAN_GATEWAY_JWKS_URI_HOSTS")
    # Private, loopback, link-local and other non-global addresses are refused, whatever the
    # host's name resolves to, unless set (tests serve a JWKS on 127.0.0.1).
    jwks_uri_allow_private: bool = Field(False, validation_alias="TONGBAN_JWKS_URI_ALLOW_PRIVATE")

    # TLS-terminating proxies (the ingress controller) whose ssl-client-cert and X-Forwarded-For
    # headers are believed: comma-separated CIDRs. None by default: no forwarded certificate is
    # accepted and the source address is always the connection's peer (services/gateway/mtls.py).
    trusted_proxies: str = Field("", validation_alias="TONGBAN_GATEWAY_TRUSTED_PROXIES")

    @field_validator("trusted_proxies")
    @classmethod
    def proxy_cidrs(cls, value: str) -> str:
        mtls.proxy_networks(value)  # refuses a malformed CIDR at start
        return value

    @cached_property
    def proxy_networks(self) -> tuple[mtls.Network, ...]:
        return mtls.proxy_networks(self.trusted_proxies)

    @field_validator("jwks_uri_hosts")
    @classmethod
    def host_list(cls, value: str) -> str:
        for host in value.split(","):
            name = host.strip().lstrip(".")
            if host.strip() and (not name or any(c in name for c in "/:@?#* ")):
                raise ValueError(f"not a host name: {host.strip()!r}")
        return value

    @cached_property
    def jwks_uri_host_list(self) -> tuple[str, ...]:
        """The jwks_uri hosts, lower-case; an entry starting with "." allows its subdomains."""
        return tuple(h.strip().lower().rstrip(".") for h in self.jwks_uri_hosts.split(",") if h.strip())

    @property
    def token_endpoint(self) -> str:
        """The token endpoint's URL: the ``aud`` a client assertion must name."""
        return f"{self.public_url.rstrip('/')}/oauth2/token"

    @field_validator("registry_url", "exchange_url", "audit_url", "console_url")
    @classmethod
    def upstream_list(cls, value: str) -> str:
        replica_urls(value)  # refuses a malformed list at start, not at the first request
        return value
