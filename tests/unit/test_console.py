"""The console's pure parts: the sealed session cookie, the CSRF comparison, where a form may send
a person back to, the message catalogues (every message for people translated, none written into
a template) and the record of the vendored assets."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from babel.messages.extract import extract_from_dir
from hypothesis import given
from hypothesis import strategies as st

from services.common.keywrap import new_kek
from services.console import assets
from services.console.api.common import HOME, local_path
from services.console.i18n import LOCALES, TRANSLATIONS, translations
from services.console.session import Sealer, Session, csrf_matches

CONSOLE = Path(assets.__file__).parent
TEMPLATES = CONSOLE / "templates"
# Shown in their own language whatever the page's language (the switch's labels).
LANGUAGE_NAMES = {"中文", "English"}


def signed_in(**changes: object) -> Session:
    session = Session(token="a.b.c", token_expires=2e9, username="gaj_admin", department="D1", roles=("data_admin",))
    return dataclasses.replace(session, **changes)


def test_a_sealed_session_opens_as_it_was_and_shows_nothing_in_clear() -> None:
    sealer = Sealer(new_kek())
    session = signed_in(language="en")
    value = sealer.seal(session)
    assert sealer.open(value) == session
    assert "gaj_admin" not in value and "a.b.c" not in value
    assert sealer.seal(session) != value  # a fresh nonce each time


def test_a_cookie_altered_or_sealed_under_another_key_is_no_session() -> None:
    sealer = Sealer(new_kek())
    value = sealer.seal(signed_in())
    flipped = value[:10] + ("A" if value[10] != "A" else "B") + value[11:]
    for forged in (flipped, value[:-2], "", "not base64 !", Sealer(new_kek()).seal(signed_in())):
        assert sealer.open(forged) is None, forged


def test_the_same_kek_opens_the_cookies_of_every_replica() -> None:
    kek, session = new_kek(), signed_in()
    assert Sealer(kek).open(Sealer(kek).seal(session)) == session


def test_a_session_is_over_when_idle_too_long_or_when_its_token_expires() -> None:
    session = signed_in(last_seen=1000.0, token_expires=5000.0)
    assert not session.idle(1000.0 + 900, 900)
    assert session.idle(1000.0 + 901, 900)
    assert session.idle(5000.0, 1e9)
    assert not Session(last_seen=0).idle(1e9, 900), "a visitor who never logged in has nothing to expire"


def test_logging_out_keeps_the_language_and_changes_the_csrf_token() -> None:
    session = signed_in(language="en")
    out = session.signed_out()
    assert not out.signed_in and out.language == "en" and out.csrf != session.csrf


@given(st.one_of(st.none(), st.text(max_size=60)))
def test_only_the_sessions_own_csrf_token_matches(sent: str | None) -> None:
    session = Session(csrf="the-token")
    assert csrf_matches(session, sent) is (sent == "the-token")


def test_a_form_sends_a_person_back_only_inside_the_console() -> None:
    assert local_path("/console/catalogue?q=户籍") == "/console/catalogue?q=户籍"
    for elsewhere in (
        None,
        "",
        "https://evil.example/",
        "//evil.example/console",
        "/v1/keys",
        "/console\\@evil",
        "/consolex",
        "/console/" + "x" * 2000,
    ):
        assert local_path(elsewhere) == HOME, elsewhere


def messages() -> set[str]:
    """Every message the console's templates and Python mark for translation."""
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    found = extract_from_dir(CONSOLE, method_map, keywords={"_": None, "N_": None, "gettext": None})
    return {message for _, _, message, _, _ in found if isinstance(message, str)}


def test_every_message_has_a_chinese_translation_and_english_falls_back_to_its_id() -> None:
    found = messages()
    assert len(found) > 20
    zh, en = translations()["zh-CN"], translations()["en"]
    untranslated = {m for m in found if zh.gettext(m) == m}
    assert untranslated == set(), "messages without a zh_CN translation (services/console/translations)"
    assert all(en.gettext(m) == m for m in found)
    assert {p.parent.parent.name for p in TRANSLATIONS.glob("*/LC_MESSAGES/messages.po")} == {
        locale or "en" for locale in LOCALES.values()
    }


def test_templates_hold_no_text_for_people_outside_the_catalogues() -> None:
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        for attribute, value in re.findall(r'\b(aria-label|placeholder|title|alt)="([^"]*)"', text):
            assert re.fullmatch(r"\{\{.*\}\}", value), f"{template.name}: {attribute}={value!r} outside _()"
        text = re.sub(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", " ", text, flags=re.S)
        text = re.sub(r"<[^>]*>", " ", text, flags=re.S)
        words = {w for w in text.split() if re.search(r"\w", w) and w not in LANGUAGE_NAMES}  # not punctuation
        assert words == set(), f"{template.name}: text outside _(): {words}"


def test_the_asset_record_names_version_licence_and_checksums_of_every_file() -> None:
    record = tomllib.loads(assets.RECORD.read_text())
    assert set(record) == {"htmx", "pico", "echarts", "axe-core"}
    for name, package in record.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", package["version"]), name
        assert package["licence"] and package["integrity"].startswith("sha512-"), name
        for f in package["files"]:
            assert re.fullmatch(r"[0-9a-f]{64}", f["sha256"]), (name, f)
        assert any(f["to"].startswith("LICENSE") for f in package["files"]), f"{name}: its licence text is vendored"


def test_the_vendored_files_are_the_recorded_bytes() -> None:
    assert assets.missing_assets() == [], "run make assets"


def test_a_file_for_the_tests_only_is_never_under_the_served_static_directory() -> None:
    tests_only = [p for p in assets.packages() if not p.served]
    assert [p.name for p in tests_only] == ["axe-core"]
    for p in tests_only:
        assert not p.vendor.is_relative_to(assets.HERE / "static"), p.name
        assert all(not (assets.VENDOR / f.name).exists() for f in p.files), p.name
