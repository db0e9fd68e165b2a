"""``[tool.icc.mail]``: the plugin validates its own table, as every icc plugin does."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from icc.errors import ConfigError

from icc_mail.addresses import check_address
from icc_mail.dsn import SmtpDsn, parse_dsn
from icc_mail.errors import MailError

KEYS = ("dsn", "sender", "timeout", "alert_to", "alert_interval")
DEFAULT_ALERT_INTERVAL = 3600.0
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_interval(value: object) -> float:
    """Seconds from a number or a duration string: ``"90s"``, ``"30m"``, ``"1h"``, ``"1h30m"``, ``"1d"``."""
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return parse_interval(float(text))
        except (ValueError, TypeError):
            pass
        m = _DURATION.fullmatch(text)
        if text and m:
            days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
            return parse_interval(float(days * 86400 + hours * 3600 + minutes * 60 + seconds))
    elif not isinstance(value, bool) and isinstance(value, int | float) and 0 < value < math.inf:
        return float(value)
    raise ValueError(f"{value!r}")


@dataclass(frozen=True)
class MailConfig:
    """The validated ``[tool.icc.mail]`` table: ``dsn`` to send, ``sender`` unless every mail has one."""

    dsn: SmtpDsn | None = None
    sender: str | None = None
    timeout: float | None = None
    alert_to: tuple[str, ...] = ()  # a mail for every failed, timed-out or abandoned run (flood-limited)
    alert_interval: float = DEFAULT_ALERT_INTERVAL  # seconds between two failure mails about one job


def parse_config(
    table: Mapping[str, object] | None,
    path: Path | None = None,
    source: Callable[[str], str | None] | None = None,
) -> MailConfig:
    """Validate the ``mail`` table; a :class:`icc.ConfigError` names the key and where it is set.

    Values set through ``ICC_MAIL__<KEY>`` variables arrive as strings; ``timeout`` is converted.
    ``source(key)`` (icc's ``Config.source``) names the variable or file that set a key; without it the
    error names ``path``.
    """

    def where(key: str | None = None) -> str:
        origin = source(key) if source is not None and key is not None else None
        origin = origin or (str(path) if path is not None else None)
        return f" in {origin}" if origin else ""

    if table is None:
        return MailConfig()
    if not isinstance(table, Mapping):
        raise ConfigError(f"mail must be a table ([tool.icc.mail] or [icc.mail]){where()}")
    for key in table:
        if key not in KEYS:
            raise ConfigError(f"unknown key mail.{key}{where(key)}; the mail table knows: {', '.join(KEYS)}")
    dsn = None
    if table.get("dsn") is not None:
        try:
            dsn = parse_dsn(table["dsn"])  # type: ignore[arg-type]  # parse_dsn checks the type itself
        except ConfigError as exc:
            raise ConfigError(f"{exc}{where('dsn')}") from None
        if dsn.cafile is not None and not Path(dsn.cafile).is_file():
            raise ConfigError(f"mail.dsn option cafile={dsn.cafile!r} is not a file{where('dsn')}")
    sender = table.get("sender")
    if sender is not None:
        try:
            check_address(sender, "mail.sender")
        except MailError as exc:
            raise ConfigError(f"{exc}{where('sender')}") from None
        assert isinstance(sender, str)
    timeout = table.get("timeout")
    if timeout is not None:
        try:  # from ICC_MAIL__TIMEOUT it is a string
            seconds = float(timeout) if isinstance(timeout, str) else timeout
        except ValueError:
            seconds = None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds < math.inf:
            raise ConfigError(
                f"mail.timeout must be a positive number of seconds, not {timeout!r}{where('timeout')}"
            )
        timeout = float(seconds)
    alert_to = table.get("alert_to")
    if alert_to is None:
        alert_to = []
    elif isinstance(alert_to, str):  # one address, or ICC_MAIL__ALERT_TO="ops@example.org,dev@example.org"
        alert_to = [part.strip() for part in alert_to.split(",") if part.strip()]
    if not isinstance(alert_to, list):
        raise ConfigError(
            f"mail.alert_to must be a list of addresses, not {type(alert_to).__name__}{where('alert_to')}"
        )
    for i, address in enumerate(alert_to):
        try:
            check_address(address, f"mail.alert_to[{i}]")
        except MailError as exc:
            raise ConfigError(f"{exc}{where('alert_to')}") from None
    if alert_to and sender is None:
        raise ConfigError(
            f"mail.alert_to needs mail.sender, the address alerts come from{where('alert_to')}; "
            'add sender = "icc <icc@example.org>"'
        )
    interval = DEFAULT_ALERT_INTERVAL
    if table.get("alert_interval") is not None:
        try:
            interval = parse_interval(table["alert_interval"])
        except ValueError:
            raise ConfigError(
                f'mail.alert_interval must be a positive duration such as "1h", "30m", "1h30m" or a '
                f"number of seconds, not {table['alert_interval']!r}{where('alert_interval')}"
            ) from None
    return MailConfig(
        dsn=dsn,
        sender=sender,
        timeout=timeout,
        alert_to=tuple(dict.fromkeys(alert_to)),
        alert_interval=interval,
    )
