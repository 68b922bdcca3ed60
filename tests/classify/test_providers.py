"""Relay host / domain -> provider: exact label-boundary suffixes, normalisation, PSL fallback."""

from __future__ import annotations

import pytest

from mailwarden.classify import Classifier

C = Classifier.load()


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("aspmx.l.google.com", "google"),
        ("ALT1.ASPMX.L.GOOGLE.COM.", "google"),  # case and trailing dot
        ("google.com", "google"),  # the suffix itself
        ("smtp.google.com", "google"),
        ("evilgoogle.com", "evilgoogle.com"),  # not on a label boundary: PSL fallback
        ("google.com.evil.example", "evil.example"),
        ("outlook-com.olc.protection.outlook.com", "outlook"),  # longest suffix wins
        ("example-com.mail.protection.outlook.com", "office365"),
        ("example-com.b-v1.mx.microsoft", "office365"),
        ("mta5.am0.yahoodns.net", "yahoo"),
        ("mx-aol.mail.gm0.yahoodns.net", "yahoo"),
        ("mx01.mail.icloud.com", "apple"),
        ("mx00.gmx.net", "gmx"),
        ("mx-ha03.web.de", "gmx"),
        ("mx00.kundenserver.de", "ionos"),
        ("mx01.t-online.de", "t-online"),
        ("smtp-in.orange.fr", "orange"),
        ("mx1.comcast.net", "comcast"),
        ("mx3.qq.com", "qq"),
        ("163mx01.mxmail.netease.com", "netease"),
        ("eu-smtp-inbound-1.mimecast.com", "mimecast"),
        ("mx0a-001b2d01.pphosted.com", "proofpoint"),
        ("d12345a.ess.barracudanetworks.com", "barracuda"),  # shipped with a trailing dot
        ("mx1.hc1234-56.iphmx.com", "ironport"),
        ("smtp.secureserver.net", "godaddy"),
        ("mx.kundenserver.example.de", "example.de"),
        ("mx.down.test", "down.test"),
        ("[192.0.2.1]", ""),
        ("192.0.2.1", ""),
        ("2001:db8::1", ""),
        ("", ""),
        ("not a host", ""),
        ("localhost", ""),
    ],
)
def test_provider_for_host(host: str, provider: str) -> None:
    assert C.provider_for_host(host) == provider


@pytest.mark.parametrize(
    ("domain", "provider"),
    [
        ("gmail.com", "google"),
        ("bob@googlemail.com", "google"),
        ("Hotmail.CO.UK", "outlook"),
        ("aol.com", "yahoo"),
        ("bluewin.ch", "swisscom"),
        ("web.de", "gmx"),
        ("example.co.uk", "example.co.uk"),
        ("sub.example.org", "example.org"),
        ("notgmail.com", "notgmail.com"),
        ("", ""),
    ],
)
def test_provider_for_domain(domain: str, provider: str) -> None:
    assert C.provider_for_domain(domain) == provider


def test_at_least_25_real_providers_with_suffixes_and_postmaster_pages() -> None:
    provs = C.providers
    assert len(provs) >= 25
    assert all(p.mx_suffixes for p in provs.values())
    assert all(p.postmaster_url.startswith(("http://", "https://")) for p in provs.values())
    assert C.is_known_provider("google") and not C.is_known_provider("example.org")


def test_no_suffix_or_domain_is_claimed_by_two_providers() -> None:
    seen_mx: dict[str, str] = {}
    seen_dom: dict[str, str] = {}
    clashes = []
    for name, p in C.providers.items():
        for s in p.mx_suffixes:
            if seen_mx.setdefault(s, name) != name:
                clashes.append((s, seen_mx[s], name))
        for d in p.domains:
            if seen_dom.setdefault(d, name) != name:
                clashes.append((d, seen_dom[d], name))
    assert clashes == []


def test_suffixes_are_normalised_without_dots() -> None:
    for p in C.providers.values():
        for s in p.mx_suffixes:
            assert s == s.strip(".").lower(), s
