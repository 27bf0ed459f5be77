"""The connector's backend file (数据源配置, ``TONGBAN_CONNECTOR_BACKENDS``): which backend answers
each resource, read once at start. Anything wrong in it is a :class:`BackendConfigError` naming the
file, the key and the reason, and the connector does not start: a provider misconfigured would
otherwise answer every query with an error, or worse, with another resource's data.

The file (TOML)::

    default = "demo"                    # optional: the backend of any resource not listed

    [backends.<name>]
    type = "http" | "sql" | "demo"
    resources = ["<信息资源代码>", …]
    concurrency = 16                    # look-ups in flight at most (default 16)
    timeout_s = 5.0                     # http, sql (default 5)
    # http: url (with {subject}, optionally {subject_type}, {items}, {fields} in path or query),
    #       auth_header + auth_env (the header's value is read from that environment variable),
    #       [backends.<name>.fields] backend JSON field = "catalogue item"
    # sql:  url (any async SQLAlchemy URL; ${VAR} is replaced by that environment variable),
    #       query (SELECT … WHERE … = :subject; also :subject_type), [backends.<name>.columns]
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError


class BackendType(StrEnum):
    DEMO = "demo"
    HTTP = "http"
    SQL = "sql"


DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT_S = 5.0
MAX_TIMEOUT_S = 60.0  # longer than any exchange deadline: the answer would only be late
MAX_CONCURRENCY = 1000
# What a URL template may name; every value is percent-encoded before it is put in.
URL_PLACEHOLDERS = frozenset({"subject", "subject_type", "items", "fields"})
# What a query may bind; values are always bound parameters, never formatted into the SQL.
QUERY_PARAMETERS = frozenset({"subject", "subject_type"})
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
COMMON_KEYS = frozenset({"type", "resources", "concurrency"})
KEYS = {
    BackendType.DEMO: COMMON_KEYS,
    BackendType.HTTP: COMMON_KEYS | {"url", "auth_header", "auth_env", "timeout_s", "fields"},
    BackendType.SQL: COMMON_KEYS | {"url", "query", "timeout_s", "columns"},
}


class BackendConfigError(ValueError):
    """The backend file is wrong: ``file``, the dotted ``key`` and the ``reason``."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key or '(file)'}: {reason}")
        self.file, self.key, self.reason = file, key, reason


Fail = Callable[[str, str], BackendConfigError]


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One configured backend. ``mapping``: backend field (JSON field or column) → catalogue item."""

    name: str
    type: BackendType
    resources: tuple[str, ...]
    concurrency: int = DEFAULT_CONCURRENCY
    timeout_s: float = DEFAULT_TIMEOUT_S
    url: str = field(default="", repr=False)  # a SQL URL may hold a password from the environment
    query: str = ""
    auth_header: str = ""
    auth_value: str = field(default="", repr=False)
    mapping: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BackendsConfig:
    """The backends, and which one answers each resource (``default`` any other, if set)."""

    backends: tuple[BackendSpec, ...]
    routes: Mapping[str, str]
    default: str | None = None


# Without a file the connector answers every resource from its demo data, as it always has.
DEMO_ONLY = BackendsConfig((BackendSpec("demo", BackendType.DEMO, ()),), {}, default="demo")


def load_backends(path: Path, environ: Mapping[str, str]) -> BackendsConfig:
    """Read and check the backend file at ``path``; secrets and passwords come from ``environ``."""
    where = str(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise BackendConfigError(where, "", f"cannot be read ({err.strerror or err})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise BackendConfigError(where, "", f"is not valid TOML: {err}") from None
    return parse_backends(document, where, environ)


def parse_backends(document: Mapping[str, Any], where: str, environ: Mapping[str, str]) -> BackendsConfig:
    def fail(key: str, reason: str) -> BackendConfigError:
        return BackendConfigError(where, key, reason)

    # [feeds.<resource>] tables (change feeds, 库表共享) are read by services/connector/feeds.py.
    if unknown := sorted(set(document) - {"backends", "default", "feeds"}):
        raise fail(unknown[0], "unknown key (expected: backends, default, feeds)")
    tables = document.get("backends")
    if not isinstance(tables, dict) or not tables:
        raise fail("backends", "missing: at least one [backends.<name>] table is required")
    specs: list[BackendSpec] = []
    routes: dict[str, str] = {}
    for name, table in tables.items():
        key = f"backends.{name}"
        if not isinstance(table, dict):
            raise fail(key, "must be a table")
        spec = parse_backend(name, table, key, fail, environ)
        for resource in spec.resources:
            if resource in routes:
                raise fail(f"{key}.resources", f"resource {resource!r} is already mapped to {routes[resource]!r}")
            routes[resource] = name
        specs.append(spec)
    default = document.get("default")
    if default is not None and (not isinstance(default, str) or default not in tables):
        raise fail("default", f"names no configured backend: {default!r}")
    return BackendsConfig(tuple(specs), routes, default)


def parse_backend(name: str, table: Mapping[str, Any], key: str, fail: Fail, environ: Mapping[str, str]) -> BackendSpec:
    kind = table.get("type")
    if kind is None:
        raise fail(f"{key}.type", "missing field")
    if kind not in set(BackendType):
        raise fail(f"{key}.type", f"unknown type {kind!r} (one of: {', '.join(BackendType)})")
    kind = BackendType(kind)
    if unknown := sorted(set(table) - KEYS[kind]):
        raise fail(
            f"{key}.{unknown[0]}", f"unknown key for a {kind} backend (expected: {', '.join(sorted(KEYS[kind]))})"
        )
    resources = table.get("resources")
    if not isinstance(resources, list) or not all(isinstance(r, str) and r.strip() for r in resources):
        raise fail(f"{key}.resources", "missing or not a list of resource codes")
    if len(set(resources)) != len(resources):
        twice = next(r for r in resources if resources.count(r) > 1)
        raise fail(f"{key}.resources", f"resource {twice!r} is listed twice")
    concurrency = table.get("concurrency", DEFAULT_CONCURRENCY)
    if type(concurrency) is not int or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise fail(f"{key}.concurrency", f"must be an integer from 1 to {MAX_CONCURRENCY}")
    spec = BackendSpec(name, kind, tuple(resources), concurrency)
    if kind is BackendType.DEMO:
        return spec
    timeout = table.get("timeout_s", DEFAULT_TIMEOUT_S)
    if type(timeout) not in (int, float) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise fail(f"{key}.timeout_s", f"must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}")
    mapping_key = "fields" if kind is BackendType.HTTP else "columns"
    mapping = parse_mapping(table.get(mapping_key), f"{key}.{mapping_key}", fail)
    url = required_string(table, "url", key, fail)
    if kind is BackendType.HTTP:
        check_url_template(url, f"{key}.url", fail)
        header, env = table.get("auth_header"), table.get("auth_env")
        auth_value = ""
        if (header is None) != (env is None):
            missing = "auth_env" if env is None else "auth_header"
            raise fail(f"{key}.{missing}", "missing field: auth_header and auth_env go together")
        if header is not None:
            if not isinstance(header, str) or not re.fullmatch(r"[A-Za-z0-9-]+", header):
                raise fail(f"{key}.auth_header", "must be an HTTP header name")
            if not isinstance(env, str) or not env:
                raise fail(f"{key}.auth_env", "must name an environment variable")
            auth_value = environ.get(env, "")
            if not auth_value:
                raise fail(f"{key}.auth_env", f"environment variable {env} is not set")
            if "\r" in auth_value or "\n" in auth_value:
                raise fail(f"{key}.auth_env", f"environment variable {env} holds a line break")
        return BackendSpec(
            name, kind, spec.resources, concurrency, float(timeout), url, "", header or "", auth_value, mapping
        )
    query = required_string(table, "query", key, fail)
    return BackendSpec(
        name,
        kind,
        spec.resources,
        concurrency,
        float(timeout),
        sql_url(url, f"{key}.url", fail, environ),
        check_query(query, f"{key}.query", fail),
        mapping=mapping,
    )


def required_string(table: Mapping[str, Any], name: str, key: str, fail: Fail) -> str:
    value = table.get(name)
    if value is None:
        raise fail(f"{key}.{name}", "missing field")
    if not isinstance(value, str) or not value.strip():
        raise fail(f"{key}.{name}", "must be a non-empty string")
    return value


def parse_mapping(table: Any, key: str, fail: Fail) -> dict[str, str]:
    """Backend field → catalogue item; each item comes from one field only."""
    if table is None:
        raise fail(key, "missing field: map each backend field to a catalogue item")
    if not isinstance(table, dict) or not table:
        raise fail(key, 'must be a non-empty table of backend field = "catalogue item"')
    mapped: dict[str, str] = {}
    for source, item in table.items():
        if not isinstance(item, str) or not item.strip():
            raise fail(f"{key}.{source}", "must name a catalogue item")
        if item in mapped.values():
            other = next(s for s, i in mapped.items() if i == item)
            raise fail(f"{key}.{source}", f"item {item!r} is already mapped from {other!r}")
        mapped[source] = item
    return mapped


def check_url_template(url: str, key: str, fail: Fail) -> None:
    """An http(s) URL whose scheme, host and port are fixed: values go only into path and query."""
    try:
        parsed = list(string.Formatter().parse(url))
    except ValueError as err:
        raise fail(key, f"bad URL template: {err}") from None
    names = [name for _, name, _, _ in parsed if name is not None]
    for _, name, spec, conversion in parsed:
        if name is not None and (name not in URL_PLACEHOLDERS or spec or conversion):
            raise fail(key, f"bad placeholder {{{name}}} (allowed: {', '.join(sorted(URL_PLACEHOLDERS))})")
    if "subject" not in names:
        raise fail(key, "bad URL: it must contain {subject}")
    try:
        split = urlsplit(url)
        split.port  # noqa: B018 — raises on a bad port
    except ValueError as err:
        raise fail(key, f"bad URL: {err}") from None
    if split.scheme not in ("http", "https") or not split.hostname:
        raise fail(key, "bad URL: an http:// or https:// URL with a host is required")
    if "{" in split.netloc or "}" in split.netloc:
        raise fail(key, "bad URL: the host may not contain a placeholder")
    if split.username or split.password:
        raise fail(key, "bad URL: credentials go in auth_header/auth_env, not in the URL")


def sql_url(url: str, key: str, fail: Fail, environ: Mapping[str, str]) -> str:
    """The URL with each ``${VAR}`` replaced by that variable (percent-encoded); an async driver."""

    def substitute(match: re.Match[str]) -> str:
        value = environ.get(match[1])
        if not value:
            raise fail(key, f"environment variable {match[1]} is not set")
        return quote(value, safe="")

    resolved = ENV_REFERENCE.sub(substitute, url)
    try:
        dialect = make_url(resolved).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as err:
        # The message of a URL that does not parse could hold the password: say only what failed.
        raise fail(key, f"bad SQLAlchemy URL ({type(err).__name__})") from None
    if not getattr(dialect, "is_async", False):
        raise fail(key, f"bad SQLAlchemy URL: driver {dialect.driver!r} is not async (e.g. postgresql+asyncpg)")
    return resolved


def check_query(query: str, key: str, fail: Fail) -> str:
    """A read-only statement binding ``:subject`` (and possibly ``:subject_type``), nothing else."""
    if not re.match(r"\s*(select|with)\b", query, re.IGNORECASE):
        raise fail(key, "must be a SELECT (or WITH … SELECT) statement")
    bound = set(text(query).compile().params)
    if "subject" not in bound:
        raise fail(key, "must bind the subject as :subject")
    if unknown := sorted(bound - QUERY_PARAMETERS):
        raise fail(key, f"unknown parameter :{unknown[0]} (allowed: :subject, :subject_type)")
    return query
