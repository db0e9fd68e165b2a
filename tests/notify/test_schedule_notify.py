"""The notification methods of ``Schedule``: checked where they are called, kept in the stored definition."""

from __future__ import annotations

import pytest
from icc.errors import ScheduleError
from icc.schedule import Notifications, Schedule


def test_notification_methods_survive_the_stored_definition() -> None:
    schedule = (
        Schedule()
        .daily()
        .email_output_to("dev@example.org", "Ops <ops@example.org>")
        .email_output_on_failure("oncall@example.org")
        .ping_before("https://hc-ping.com/KEY/start-only")
        .then_ping("https://example.org/then")
        .ping_on_success("https://example.org/ok")
        .ping_on_failure("https://example.org/fail")
        .ping_on_failure("https://example.org/fail2")
        .without_pings()
    )
    rebuilt = Schedule.from_definition(schedule.definition())
    assert (
        rebuilt.notifications
        == schedule.notifications
        == Notifications(
            email_output_to=("dev@example.org", "Ops <ops@example.org>"),
            email_output_on_failure=("oncall@example.org",),
            ping_before=("https://hc-ping.com/KEY/start-only",),
            then_ping=("https://example.org/then",),
            ping_on_success=("https://example.org/ok",),
            ping_on_failure=("https://example.org/fail", "https://example.org/fail2"),
            pings=False,
        )
    )
    assert rebuilt.definition() == schedule.definition()


def test_a_job_without_notifications_keeps_its_old_definition() -> None:
    # No "notify" key: definitions stored before these methods existed stay equal, so `icc scan` changes nothing.
    assert "notify" not in Schedule().daily().definition()
    assert Schedule().notifications == Notifications()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.email_output_to(), "needs at least one address"),
        (lambda s: s.email_output_to("ops"), "give e-mail addresses"),
        (lambda s: s.email_output_on_failure(["ops@example.org"]), "give e-mail addresses"),
        (lambda s: s.email_output_to("ops@example.org\nBcc: x@example.org"), "line break"),
        (lambda s: s.ping_before("hc-ping.com/KEY"), r"ping_before\(\*\*\*\) is not valid"),
        (lambda s: s.then_ping("mailto:ops@example.org"), "http:// or https:// URL"),
        (lambda s: s.ping_on_success(None), "is not valid"),
        (lambda s: s.ping_on_failure("https://exa mple.org/KEY"), "without spaces"),
    ],
)
def test_notification_mistakes_are_refused_where_they_are_made(call: object, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        call(Schedule())  # type: ignore[operator]
