"""数据源配置 — the connector's backend file: every mistake is reported with the file, the key and
the reason, and the connector refuses to start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.keywrap import new_kek
from services.connector.backend_config import (
    DEMO_ONLY,
    BackendConfigError,
    BackendsConfig,
    BackendType,
    load_backends,
)
from tests.stack import ROOT

ENV = {"HUKOU_TOKEN": "Bearer s3cret", "MARRIAGE_DB_PASSWORD": "p@ss/word"}

HTTP = """
[backends.hukou]
type = "http"
resources = ["R-HUKOU"]
url = "https://hukou.example.org/v1/residents/{subject}?fields={fields}"
auth_header = "Authorization"
auth_env = "HUKOU_TOKEN"
timeout_s = 2.5
concurrency = 4
[backends.hukou.fields]
xm = "姓名"
csrq = "出生日期"
"""

SQL = """
[backends.marriage]
type = "sql"
resources = ["R-MARRIAGE", "R-DIVORCE"]
url = "postgresql+asyncpg://reader:${MARRIAGE_DB_PASSWORD}@db.example.org:5432/marriage"
query = "SELECT xm, djrq FROM hy.djb WHERE sfzh = :subject AND :subject_type = 'id_card'"
[backends.marriage.columns]
xm = "姓名"
djrq = "登记日期"
"""

DEMO = """
[backends.demo]
type = "demo"
resources = []
"""


def write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "backends.toml"
    path.write_text(content, encoding="utf-8")
    return path


def test_a_file_of_http_sql_and_demo_backends_is_read(tmp_path: Path) -> None:
    config = load_backends(write(tmp_path, 'default = "demo"\n' + HTTP + SQL + DEMO), ENV)
    assert isinstance(config, BackendsConfig)
    by_name = {spec.name: spec for spec in config.backends}
    assert [by_name[n].type for n in ("hukou", "marriage", "demo")] == [BackendType.HTTP, BackendType.SQL, "demo"]
    assert dict(config.routes) == {"R-HUKOU": "hukou", "R-MARRIAGE": "marriage", "R-DIVORCE": "marriage"}
    assert config.default == "demo"
    hukou = by_name["hukou"]
    assert (hukou.auth_header, hukou.auth_value, hukou.timeout_s, hukou.concurrency) == (
        "Authorization",
        "Bearer s3cret",
        2.5,
        4,
    )
    assert dict(hukou.mapping) == {"xm": "姓名", "csrq": "出生日期"}
    # The password comes from the environment, percent-encoded; it never shows in a repr.
    assert by_name["marriage"].url == "postgresql+asyncpg://reader:p%40ss%2Fword@db.example.org:5432/marriage"
    assert "p%40ss" not in repr(by_name["marriage"]) and "s3cret" not in repr(hukou)


def test_without_a_file_the_demo_backend_answers_every_resource() -> None:
    assert [spec.type for spec in DEMO_ONLY.backends] == [BackendType.DEMO]
    assert DEMO_ONLY.default == "demo" and not DEMO_ONLY.routes


# (file content, environment, key named, reason contains)
MISTAKES = {
    "unreadable TOML": ("[backends.x\n", ENV, "(file)", "is not valid TOML"),
    "no backends": ('default = "x"\n', ENV, "backends", "missing"),
    "unknown top-level key": ("backend = 1\n" + HTTP, ENV, "backend", "unknown key"),
    "unknown type": (HTTP.replace('"http"', '"ftp"'), ENV, "backends.hukou.type", "unknown type 'ftp'"),
    "missing type": (HTTP.replace('type = "http"\n', ""), ENV, "backends.hukou.type", "missing field"),
    "unknown key in a backend": (
        HTTP.replace("timeout_s", "timout_s"),
        ENV,
        "backends.hukou.timout_s",
        "unknown key",
    ),
    "missing url": (HTTP.replace("url = ", "# url = "), ENV, "backends.hukou.url", "missing field"),
    "missing query": (SQL.replace("query = ", "# query = "), ENV, "backends.marriage.query", "missing field"),
    "missing field mapping": (
        HTTP.split("[backends.hukou.fields]")[0],
        ENV,
        "backends.hukou.fields",
        "missing field",
    ),
    "missing resources": (DEMO.replace("resources = []\n", ""), ENV, "backends.demo.resources", "missing"),
    "a host from the subject": (
        HTTP.replace("https://hukou.example.org/", "https://{subject}.example.org/"),
        ENV,
        "backends.hukou.url",
        "host may not contain a placeholder",
    ),
    "not http": (HTTP.replace("https://", "file://"), ENV, "backends.hukou.url", "http:// or https://"),
    "no subject in the URL": (HTTP.replace("{subject}", "all"), ENV, "backends.hukou.url", "{subject}"),
    "unknown placeholder": (HTTP.replace("{fields}", "{password}"), ENV, "backends.hukou.url", "{password}"),
    "credentials in the URL": (
        HTTP.replace("https://", "https://user:pw@"),
        ENV,
        "backends.hukou.url",
        "credentials",
    ),
    "auth env var not set": (HTTP, {"HUKOU_TOKEN": ""}, "backends.hukou.auth_env", "HUKOU_TOKEN is not set"),
    "auth env var with a line break": (
        HTTP,
        {"HUKOU_TOKEN": "Bearer x\r\nX-Evil: 1"},
        "backends.hukou.auth_env",
        "line break",
    ),
    "auth header without env": (
        HTTP.replace('auth_env = "HUKOU_TOKEN"\n', ""),
        ENV,
        "backends.hukou.auth_env",
        "go together",
    ),
    "SQL password env var not set": (SQL, {}, "backends.marriage.url", "MARRIAGE_DB_PASSWORD is not set"),
    "SQL URL of no known dialect": (
        SQL.replace("postgresql+asyncpg", "nosuchdb"),
        ENV,
        "backends.marriage.url",
        "bad SQLAlchemy URL",
    ),
    "SQL URL of a blocking driver": (
        SQL.replace("postgresql+asyncpg", "postgresql+psycopg2"),
        ENV,
        "backends.marriage.url",
        "not async",
    ),
    "query formatting the subject in": (
        SQL.replace(":subject AND", "'{subject}' AND"),
        ENV,
        "backends.marriage.query",
        ":subject",
    ),
    "query binding an unknown parameter": (
        SQL.replace(":subject_type", ":dept"),
        ENV,
        "backends.marriage.query",
        ":dept",
    ),
    "query that writes": (
        SQL.replace("SELECT xm, djrq FROM", "DELETE FROM"),
        ENV,
        "backends.marriage.query",
        "SELECT",
    ),
    "a resource mapped twice": (
        HTTP + SQL.replace('"R-MARRIAGE"', '"R-HUKOU"'),
        ENV,
        "backends.marriage.resources",
        "'R-HUKOU' is already mapped to 'hukou'",
    ),
    "a resource listed twice": (
        SQL.replace('"R-DIVORCE"', '"R-MARRIAGE"'),
        ENV,
        "backends.marriage.resources",
        "listed twice",
    ),
    "an item mapped from two fields": (
        HTTP + 'xingming = "姓名"\n',
        ENV,
        "backends.hukou.fields.xingming",
        "'姓名' is already mapped from 'xm'",
    ),
    "timeout out of range": (HTTP.replace("2.5", "0"), ENV, "backends.hukou.timeout_s", "above 0"),
    "concurrency not an integer": (HTTP.replace("= 4", '= "4"'), ENV, "backends.hukou.concurrency", "integer"),
    "default naming no backend": ('default = "nope"\n' + DEMO, ENV, "default", "names no configured backend"),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_names_the_file_the_key_and_the_reason(tmp_path: Path, mistake: str) -> None:
    content, environ, key, reason = MISTAKES[mistake]
    path = write(tmp_path, content)
    with pytest.raises(BackendConfigError) as raised:
        load_backends(path, environ)
    assert (raised.value.file, raised.value.key) == (str(path), key if key != "(file)" else "")
    assert reason in raised.value.reason
    assert str(raised.value).startswith(f"{path}: {key}: ")
    # A secret never appears in the message.
    assert "s3cret" not in str(raised.value) and "p@ss" not in str(raised.value)


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(BackendConfigError, match="cannot be read"):
        load_backends(tmp_path / "absent.toml", ENV)


def test_the_connector_refuses_to_start_with_a_wrong_file(tmp_path: Path) -> None:
    path = write(tmp_path, HTTP.replace('"http"', '"ftp"'))
    env = {
        **os.environ,
        "TONGBAN_CONNECTOR_BACKENDS": str(path),
        "HUKOU_TOKEN": "x",
        "TONGBAN_KEY_ENCRYPTION_KEY": new_kek(),
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.connector"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert f"{path}: backends.hukou.type: unknown type 'ftp'" in done.stderr


def test_the_readme_example_is_a_valid_file(tmp_path: Path) -> None:
    """The worked example of README "Connector configuration" is read as it stands."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Connector configuration", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    environ = {"HUKOU_API_AUTHORIZATION": "Bearer x", "MARRIAGE_DB_PASSWORD": "pw"}
    config = load_backends(write(tmp_path, example), environ)
    assert {spec.name: spec.type for spec in config.backends} == {
        "hukou-api": BackendType.HTTP,
        "marriage-db": BackendType.SQL,
        "demo": BackendType.DEMO,
    }
    assert config.default == "demo" and set(config.routes) == {"101010/000001", "101030/000002"}
