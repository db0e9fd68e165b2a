from __future__ import annotations

from pathlib import Path

import pytest
from icc import ConfigError
from icc_mail import MailConfig, parse_config, parse_dsn


def test_no_mail_table_is_an_empty_config() -> None:
    assert parse_config(None) == MailConfig()


def test_full_table() -> None:
    config = parse_config({"dsn": "smtp://h:2525", "sender": "Shop <shop@example.org>", "timeout": 5})
    assert config == MailConfig(parse_dsn("smtp://h:2525"), "Shop <shop@example.org>", 5.0)


def test_values_from_icc_mail_variables_are_strings_and_converted() -> None:
    assert parse_config({"dsn": "smtp://h", "timeout": "2.5"}).timeout == 2.5


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"dns": "smtp://h"}, "unknown key mail.dns"),
        ({"dsn": "smtp://h:port"}, "mail.dsn"),
        ({"dsn": "ftp://h"}, "mail.dsn"),
        ({"dsn": 25}, "mail.dsn"),
        ({"dsn": "smtps://h?cafile=/no/such/ca.pem"}, "cafile='/no/such/ca.pem' is not a file"),
        ({"sender": "not an address"}, "mail.sender"),
        ({"sender": "a@example.org\nBcc: x@example.org"}, "mail.sender"),
        ({"timeout": 0}, "mail.timeout"),
        ({"timeout": "soon"}, "mail.timeout"),
        ({"timeout": True}, "mail.timeout"),
    ],
)
def test_bad_table_is_a_config_error_naming_the_key_and_file(table: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(table, Path("/srv/app/icc.toml"))
    assert says in str(info.value)
    assert "/srv/app/icc.toml" in str(info.value)


def test_bad_value_from_a_variable_names_the_variable() -> None:
    def source(key: str) -> str:
        return "environment variable ICC_MAIL__DSN" if key == "dsn" else "/srv/app/icc.toml"

    with pytest.raises(ConfigError) as info:
        parse_config({"dsn": "smtp://h:port", "sender": "a@example.org"}, Path("/srv/app/icc.toml"), source)
    assert str(info.value).endswith(" in environment variable ICC_MAIL__DSN")
    with pytest.raises(ConfigError, match=r"mail.sender.* in /srv/app/icc.toml$"):
        parse_config({"sender": "nobody"}, Path("/srv/app/icc.toml"), source)
