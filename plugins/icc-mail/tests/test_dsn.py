from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from icc import ConfigError
from icc_mail import SmtpDsn, parse_dsn


def test_smtp_defaults_to_port_25_without_tls_or_auth() -> None:
    dsn = parse_dsn("smtp://mail.example.org")
    assert dsn == SmtpDsn("smtp", "mail.example.org", 25)
    assert not dsn.implicit_tls


def test_smtps_defaults_to_port_465() -> None:
    dsn = parse_dsn("smtps://mail.example.org")
    assert (dsn.port, dsn.implicit_tls, dsn.starttls) == (465, True, False)


def test_submission_with_starttls_user_password_and_options() -> None:
    dsn = parse_dsn(
        "smtp://me%40example.org:s%3Acret@mail.example.org:587?starttls=true&timeout=10&cafile=/ca.pem"
    )
    assert dsn.username == "me@example.org"
    assert dsn.password == "s:cret"
    assert (dsn.port, dsn.starttls, dsn.timeout, dsn.cafile, dsn.verify) == (587, True, 10.0, "/ca.pem", True)


def test_verify_false_turns_certificate_checks_off() -> None:
    assert parse_dsn("smtps://h?verify=false").verify is False


def test_ipv6_host() -> None:
    dsn = parse_dsn("smtp://[::1]:2525")
    assert (dsn.host, dsn.port) == ("::1", 2525)
    assert parse_dsn(dsn.to_url()) == dsn


def test_password_never_shows_in_repr_str_or_errors() -> None:
    dsn = parse_dsn("smtp://u:topsecret@h:587?starttls=1")
    assert "topsecret" not in repr(dsn)
    assert "topsecret" not in str(dsn)
    with pytest.raises(ConfigError) as info:
        parse_dsn("smtp://u:topsecret@h:99999")
    assert "topsecret" not in str(info.value)


@pytest.mark.parametrize(
    ("dsn", "says"),
    [
        ("http://h", "scheme 'http'"),
        ("smtp://", "no host"),
        ("smtp://h:abc", "port"),
        ("smtp://h:70000", "port"),
        ("smtp://h:0", "port 0"),
        ("smtp://h?tls=1", "unknown option 'tls'"),
        ("smtp://h?starttls=maybe", "starttls='maybe'"),
        ("smtps://h?starttls=true", "starttls=true belongs to smtp://"),
        ("smtp://h?timeout=0", "timeout"),
        ("smtp://h?timeout=soon", "timeout"),
        ("smtp://h/path", "path"),
        ("smtp://:pw@h", "no user name"),
        ("smtp://h?timeout=1&timeout=2", "twice"),
    ],
)
def test_bad_dsn_is_a_config_error_saying_what_is_wrong(dsn: str, says: str) -> None:
    with pytest.raises(ConfigError, match=r"mail\.dsn") as info:
        parse_dsn(dsn)
    assert says in str(info.value)


def test_dsn_must_be_a_string() -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        parse_dsn(25)  # type: ignore[arg-type]


credentials = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30)


@given(user=credentials, password=st.one_of(st.none(), st.text(st.characters(exclude_categories=("Cs",)))))
def test_user_and_password_round_trip_through_percent_encoding(user: str, password: str | None) -> None:
    auth = quote(user, safe="") + ("" if password is None else ":" + quote(password, safe=""))
    dsn = parse_dsn(f"smtp://{auth}@mail.example.org:587?starttls=true")
    assert (dsn.username, dsn.password) == (user, password)
    assert parse_dsn(dsn.to_url()) == dsn


@given(
    scheme=st.sampled_from(["smtp", "smtps"]),
    port=st.integers(1, 65535),
    timeout=st.one_of(st.none(), st.floats(0.001, 3600)),
    verify=st.booleans(),
)
def test_to_url_round_trips(scheme: str, port: int, timeout: float | None, verify: bool) -> None:
    rebuilt = SmtpDsn(
        parse_dsn(f"{scheme}://h").scheme,
        "h",
        port,
        timeout=timeout,
        verify=verify,
        cafile="/etc/ssl/my ca+.pem",
    )
    parsed = parse_dsn(rebuilt.to_url())
    assert parsed == rebuilt
