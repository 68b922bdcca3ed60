"""Validators guarding everything that reaches a Postfix file or a socketmap answer."""

from __future__ import annotations

import pytest

from mailwarden.errors import ValidationError
from mailwarden.postfix import validate


@pytest.mark.parametrize(
    ("raw", "out"),
    [
        ("bluewin.ch", "bluewin.ch"),
        ("BLUEWIN.CH.", "bluewin.ch"),
        ("Bücher.ch", "xn--bcher-kva.ch"),
        ("a-b.c-d.co.uk", "a-b.c-d.co.uk"),
    ],
)
def test_domain_ok(raw: str, out: str) -> None:
    assert validate.domain(raw) == out


@pytest.mark.parametrize(
    "raw",
    ["", "ch", "-a.ch", "a-.ch", "a..ch", "1.2.3.4", "a.123", "a b.ch", "a.ch\n", "a.ch\r",
     "\na.ch", "[127.0.0.1]", "a." + "x" * 64 + ".ch", "a\x00.ch", "a;rm.ch", "a/b.ch"],
)  # fmt: skip
def test_domain_refused(raw: str) -> None:
    with pytest.raises(ValidationError):
        validate.domain(raw)


@pytest.mark.parametrize(
    "raw", ["a b@x.ch", "a@x.ch\n", "a\n@x.ch", '"q"@x.ch', "@x.ch", "a@", "a", "a@b@c"]
)
def test_address_refused(raw: str) -> None:
    with pytest.raises(ValidationError):
        validate.address(raw)


def test_address_ok() -> None:
    assert validate.address("Bob.Smith+news@BlueWin.CH") == ("Bob.Smith+news", "bluewin.ch")


@pytest.mark.parametrize(
    "text",
    ["ok\n", "x\nretry:5.0.0 injected", "tab\there", "x" * 201, "", "two  spaces", "a{b}"],
)
def test_reason_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        validate.reason(text)


def test_retry_answer_and_codes() -> None:
    assert validate.retry_answer("4.7.1", "circuit open for provider x: y") == (
        "retry:4.7.1 circuit open for provider x: y"
    )
    for bad in ("5.7.1", "4.7.1\n", "4.7", "4.7.1 x"):
        with pytest.raises(ValidationError):
            validate.enhanced_4xx(bad)


@pytest.mark.parametrize("v", ["abc\n", "mwslow10s1\n", "smtp -o x", "UPPER", "1abc"])
def test_transport_and_parameter_refused(v: str) -> None:
    with pytest.raises(ValidationError):
        validate.transport(v)
    with pytest.raises(ValidationError):
        validate.parameter(v)


def test_queue_id_and_config_value() -> None:
    assert validate.queue_id("394D3162231") == "394D3162231"
    for bad in ("394D3162231\n", "../etc", "ab", "394D31 62231"):
        with pytest.raises(ValidationError):
            validate.queue_id(bad)
    with pytest.raises(ValidationError):
        validate.config_value("a\nb")
    assert validate.pcre_pattern("a/b") == "a\\/b"
