"""``[tool.icc.mail]``: the plugin validates its own table, as every icc plugin does."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from icc.errors import ConfigError

from icc_mail.addresses import check_address
from icc_mail.dsn import SmtpDsn, parse_dsn
from icc_mail.errors import MailError

KEYS = ("dsn", "sender", "timeout")


@dataclass(frozen=True)
class MailConfig:
    """The validated ``[tool.icc.mail]`` table: ``dsn`` to send, ``sender`` unless every mail has one."""

    dsn: SmtpDsn | None = None
    sender: str | None = None
    timeout: float | None = None


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
    return MailConfig(dsn=dsn, sender=sender, timeout=timeout)
