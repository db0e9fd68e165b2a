"""Django's tasks framework (the django-tasks backport on Django 5.2) on icc's queues: enqueue in the web
process, a real `manage.py icc consume` runs it, the result is read back through the framework's API."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from frameworkkit import DjangoSite, pg_database

pytest.importorskip("django")
pytest.importorskip("django_tasks")

TASKS_SETTING = 'TASKS = {"default": {"BACKEND": "icc.contrib.django.tasks.IccTaskBackend"}}'


@pytest.fixture(params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> DjangoSite:
    if request.param == "sqlite":
        made = DjangoSite(tmp_path, apps=["django_tasks", "shop"], extra=TASKS_SETTING)
    else:
        made = DjangoSite(
            tmp_path,
            apps=["django_tasks", "shop"],
            database=pg_database(request.getfixturevalue("pg_url")),
            icc={"store": {"database": "default"}},
            extra=TASKS_SETTING,
        )
    made.write(
        "shop/tasks.py",
        """
        from django.contrib.auth.models import User
        from django_tasks import task


        @task()
        def add_user(name):
            User.objects.create(username=name)
            return {"users": User.objects.count()}


        @task(queue_name="emails", priority=10)
        def fails():
            raise ValueError("no mail today")
        """,
    )
    made.manage("migrate", "-v0")
    if request.param == "postgres":
        made.manage("icc", "db", "migrate")
    made.manage("icc", "scan")
    return made


def test_enqueued_task_is_run_by_a_consumer_and_its_result_is_read_back(site: DjangoSite) -> None:
    out = site.shell("""
        from shop.tasks import add_user
        result = add_user.enqueue("ann")
        print(result.id, result.status)
    """)
    result_id, status = out.split()
    assert status == "READY"
    site.manage("icc", "consume", "async", "--stop-when-empty")
    out = site.shell(f"""
        from shop.tasks import add_user
        result = add_user.get_result({result_id!r})
        print(result.status, result.return_value["users"], result.attempts, result.args)
    """)
    assert out.split() == ["SUCCESSFUL", "1", "1", "['ann']"]


def test_run_after_delays_the_message_and_a_rolled_back_enqueue_sends_nothing(site: DjangoSite) -> None:
    out = site.shell("""
        from datetime import timedelta
        from django.db import transaction
        from django.utils import timezone
        from shop.tasks import add_user

        later = add_user.using(run_after=timezone.now() + timedelta(hours=1)).enqueue("later")
        try:
            with transaction.atomic():
                add_user.enqueue("rolled back")
                raise RuntimeError
        except RuntimeError:
            pass
        print(later.id)
    """)
    later = out.strip()
    site.manage("icc", "consume", "async", "--stop-when-empty")
    out = site.shell(f"""
        from django.contrib.auth.models import User
        from shop.tasks import add_user
        print(add_user.get_result({later!r}).status, User.objects.count())
    """)
    assert out.split() == ["READY", "0"]


def test_run_after_runs_the_task_once_its_time_has_come(site: DjangoSite) -> None:
    out = site.shell("""
        from datetime import timedelta
        from django.utils import timezone
        from shop.tasks import add_user

        soon = add_user.using(run_after=timezone.now() + timedelta(seconds=4)).enqueue("soon")
        print(soon.id, timezone.now().timestamp() + 4)
    """)
    result_id, due = out.split()
    site.manage("icc", "consume", "async", "--stop-when-empty")
    early = site.shell(f"from shop.tasks import add_user; print(add_user.get_result({result_id!r}).status)")
    if time.time() < float(due) - 0.5:  # still before run_after: not run yet
        assert early.strip() == "READY"
    time.sleep(max(0.0, float(due) - time.time()) + 0.5)
    site.manage("icc", "consume", "async", "--stop-when-empty")
    out = site.shell(f"""
        from shop.tasks import add_user
        r = add_user.get_result({result_id!r})
        print(r.status, r.return_value["users"], r.started_at >= r.task.run_after)
    """)
    assert out.split() == ["SUCCESSFUL", "1", "True"]


def test_a_failing_task_is_failed_with_its_error_and_queue_name_maps_to_an_icc_queue(tmp_path: Path) -> None:
    site = DjangoSite(
        tmp_path,
        apps=["django_tasks", "shop"],
        icc={"state_dir": "state", "queues": {"mail": {"retries": 0}}},
        extra='TASKS = {"default": {"BACKEND": "icc.contrib.django.tasks.IccTaskBackend", '
        '"OPTIONS": {"QUEUES": {"emails": "mail"}}}}',
    )
    site.write(
        "shop/tasks.py",
        """
        from django_tasks import task


        @task(queue_name="emails", priority=10)
        def fails():
            raise ValueError("no mail today")
        """,
    )
    site.manage("migrate", "-v0")
    site.manage("icc", "scan")
    result_id = site.shell("from shop.tasks import fails; print(fails.enqueue().id)").strip()
    site.manage("icc", "consume", "async", "--stop-when-empty")  # not its queue: nothing happens to it
    assert (
        site.shell(f"from shop.tasks import fails; print(fails.get_result({result_id!r}).status)").strip()
        == "READY"
    )
    site.manage("icc", "consume", "mail", "--stop-when-empty", check=False)
    out = site.shell(f"""
        from shop.tasks import fails
        r = fails.get_result({result_id!r})
        print(r.status, r.errors[0].exception_class_path, r.task.priority)
    """)
    assert out.split() == ["FAILED", "builtins.ValueError", "10"]
