"""回调地址 — which URLs the exchange will POST an async query's outcome to (``is_https``), and
how a provider's error code is read from its reply (``provider_error``): pure functions over what
clients and connectors send."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.exchange.service import is_https, provider_error


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://consumer.example.gov.cn/tongban/callback", True),
        ("https://127.0.0.1:8443/hook?x=1", True),
        ("HTTPS://consumer.example.gov.cn/", True),  # the scheme is case-insensitive (urlsplit lowers it)
        ("http://consumer.example.gov.cn/hook", False),
        ("https:///no-host", False),
        ("https://user:secret@consumer.example.gov.cn/", False),  # no credentials in a URL
        ("https://consumer.example.gov.cn/#frag", False),
        ("ftp://consumer.example.gov.cn/", False),
        ("https://[::1/", False),  # an invalid IPv6 literal: refused, not an error
        ("consumer.example.gov.cn/hook", False),
    ],
)
def test_only_absolute_https_urls_with_a_host_and_no_credentials(url: str, ok: bool) -> None:
    assert is_https(url) is ok


@given(st.text(max_size=200))
def test_any_text_is_judged_without_an_error(url: str) -> None:
    assert is_https(url) in (True, False)
    if is_https(url):
        assert url.lower().startswith("https://")


@pytest.mark.parametrize(
    ("error", "parsed"),
    [
        ("backend_timeout: no answer within 5 s", ("backend_timeout", "no answer within 5 s")),
        ("resource_not_configured: 101010/000001", ("resource_not_configured", "101010/000001")),
        (
            "request addressed to X, not this connector",
            ("provider_error", "request addressed to X, not this connector"),
        ),
        ("", ("provider_error", "")),
        ("Not A Code: detail", ("provider_error", "Not A Code: detail")),
    ],
)
def test_a_providers_error_code_is_the_part_before_the_colon(error: str, parsed: tuple[str, str]) -> None:
    assert provider_error(error) == parsed
