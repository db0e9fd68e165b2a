"""The module the ``icc.tasks`` entry point names: reads ``[tool.icc.mail]``, registers ``mail.send``, and
queues failure alerts and output mail after runs (:mod:`icc_mail.alerts`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import icc

from icc_mail.send import MESSAGE_NAME, QUEUE

if TYPE_CHECKING:
    from icc.config import Config
    from icc.jobs import Job, RunContext, RunResult

    from icc_mail.config import MailConfig


class _Config(Protocol):
    @property
    def tables(self) -> Mapping[str, Any]: ...

    @property
    def path(self) -> Path | None: ...

    def source(self, key: str) -> str | None: ...


# The setting without which after_run does nothing for a job with no email_output_* of its own (icc's consumer
# jobs): unset, icc's light cron minute runs those jobs without loading the plugins (icc docs/plugins.md).
ICC_RUN_HOOK_SETTINGS = ("mail.alert_to",)
# For such a job after_run acts only on a failed, timed-out or abandoned run, or on a success while this state
# store meta key holds its failure episode (icc_mail.alerts.META_PREFIX): icc's light minute loads the plugin
# for those runs only (a success after a success loads nothing).
ICC_RUN_HOOK_EPISODE = "mail.alert:{job}"


class _State:
    config: MailConfig | None = None
    icc: Config | None = None  # icc's whole configuration: the state directory, the queues, the time zone


@icc.hookimpl
def configure(config: _Config) -> None:
    """Validate ``[tool.icc.mail]`` when icc loads its configuration (an error names the key)."""
    from icc_mail.config import parse_config

    _State.config = parse_config(
        config.tables.get("mail"), config.path, lambda key: config.source(f"mail.{key}")
    )
    from icc.config import Config

    _State.icc = config if isinstance(config, Config) else None


@icc.hookimpl
def register_handlers(register: Callable[..., None]) -> None:
    """The ``mail`` queue's one message: ``mail.send``."""
    register(MESSAGE_NAME, handle_send, queue=QUEUE)


def handle_send(payload: dict[str, Any]) -> None:
    """Deliver one ``mail.send`` message with the configuration icc handed to :func:`configure`."""
    # smtplib, ssl and the e-mail package are imported in the consumer only, not by every icc command.
    from icc_mail.config import MailConfig
    from icc_mail.delivery import deliver

    deliver(payload, _State.config or MailConfig())


@icc.hookimpl
def after_run(job: Job, run: RunContext, result: RunResult) -> None:
    """Failure alerts (``mail.alert_to``, ``email_output_on_failure``) and output mail (``email_output_to``)."""
    if _State.config is None or _State.icc is None:
        return
    notes = job.schedule.notifications
    if not (_State.config.alert_to or notes.email_output_on_failure or notes.email_output_to):
        return  # nothing to mail: not even the alerts module is imported
    from icc_mail.alerts import notify

    notify(_State.icc, _State.config, job, run, result)


@icc.hookimpl
def job_stale(job: str, alert: Mapping[str, Any]) -> None:
    """A job gone stale (icc's ``expect_success_within``): one mail to ``mail.alert_to`` per episode."""
    if _State.config is None or _State.icc is None or not _State.config.alert_to:
        return
    from icc_mail.alerts import stale_mail

    stale_mail(_State.icc, _State.config, job, alert)
