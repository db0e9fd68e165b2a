"""Django's tasks framework on icc's queues::

    TASKS = {"default": {"BACKEND": "icc.contrib.django.tasks.IccTaskBackend"}}

``my_task.enqueue(...)`` writes the task's record (table ``icc_taskrecord``) and, once the surrounding
transaction commits, puts one message on an icc queue; a consumer (``manage.py icc consume``, or the consumer cron
jobs) runs it and records its status, return value and errors, which ``my_task.get_result(id)`` and
``result.refresh()`` read. ``run_after`` becomes the message's delay; ``queue_name`` maps to an icc queue
(``"default"`` to ``async``; ``OPTIONS = {"QUEUES": {"default": "async", "emails": "mail"}}`` says otherwise);
``priority`` is accepted and recorded (icc orders queues, not messages within one: give urgent tasks a queue
of their own, listed first in ``consumers.queues``). A task that raises is retried with the queue's backoff
(``[icc.queues.<name>] retries``), each attempt in ``errors``; its status stays FAILED after the last.

This module is also the plugin (added to ``plugins`` when the backend is configured) that registers the
message's handler.
"""

from __future__ import annotations

import os
import socket
import traceback
import uuid
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

import icc

try:  # Django 6
    from django.tasks import TaskResult, TaskResultStatus  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.backends.base import BaseTaskBackend  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.base import TaskContext, TaskError  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.exceptions import TaskResultDoesNotExist  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Django 5.2: the django-tasks backport, the same API
    from django_tasks import TaskResult, TaskResultStatus
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import TaskContext, TaskError
    from django_tasks.exceptions import TaskResultDoesNotExist

__all__ = ["MESSAGE", "IccTaskBackend", "register_handlers"]

MESSAGE = "django.task"  # the icc message that carries a task
DEFAULT_QUEUES = {"default": "async"}


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class IccTaskBackend(BaseTaskBackend):  # type: ignore[misc]  # Django has no type hints here
    supports_defer = True
    supports_async_task = False
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.queue_map: dict[str, str] = {**DEFAULT_QUEUES, **dict(self.options.get("QUEUES", {}))}
        if "QUEUES" not in params:  # any queue_name that maps to an icc queue (checked at enqueue)
            self.queues: set[str] = set()

    def icc_queue(self, queue_name: str) -> str:
        return self.queue_map.get(queue_name, queue_name)

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        from icc.config import load_config  # lazy: ~75 ms with icc.queue: only to enqueue
        from icc.contrib.django.models import TaskRecord  # lazy: a model: only once the apps are loaded
        from icc.queue.dispatch import dispatch, validate_queue  # lazy: as above
        from icc.queue.message import encode_payload  # lazy: as above

        self.validate_task(task)
        queue = validate_queue(load_config(), self.icc_queue(task.queue_name))
        now = timezone.now()
        result = TaskResult(
            task=task,
            id=uuid.uuid4().hex,
            status=TaskResultStatus.READY,
            enqueued_at=now,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        payload = {"id": result.id, "task": task.module_path, "backend": self.alias}
        encode_payload(payload)
        delay = 0.0
        if task.run_after is not None:
            delay = max(0.0, (task.run_after - now).total_seconds()) if isinstance(now, datetime) else 0.0
        TaskRecord.objects.create(
            id=result.id,
            task_path=task.module_path,
            backend=self.alias,
            queue_name=task.queue_name,
            priority=task.priority,
            run_after=task.run_after,
            args=result.args,
            kwargs=result.kwargs,
            status=TaskResultStatus.READY,
            enqueued_at=now,
        )
        # After the commit: a consumer must find the record, and a rollback takes both back.
        transaction.on_commit(lambda: dispatch(MESSAGE, payload, queue=queue, delay=delay))
        return result

    def get_result(self, result_id: str) -> Any:
        from icc.contrib.django.models import TaskRecord  # lazy: a model: only once the apps are loaded

        try:
            record = TaskRecord.objects.get(id=result_id)
        except TaskRecord.DoesNotExist:
            raise TaskResultDoesNotExist(result_id) from None
        return _result(record)


def _task(record: Any) -> Any:
    task = import_string(record.task_path)
    return task.using(
        priority=record.priority,
        queue_name=record.queue_name,
        run_after=record.run_after,
        backend=record.backend,
    )


def _result(record: Any) -> Any:
    result = TaskResult(
        task=_task(record),
        id=record.id,
        status=TaskResultStatus(record.status),
        enqueued_at=record.enqueued_at,
        started_at=record.started_at,
        last_attempted_at=record.last_attempted_at,
        finished_at=record.finished_at,
        args=record.args,
        kwargs=record.kwargs,
        backend=record.backend,
        errors=[
            TaskError(exception_class_path=e["exception_class_path"], traceback=e["traceback"])
            for e in record.errors
        ],
        worker_ids=list(record.worker_ids),
    )
    object.__setattr__(result, "_return_value", record.return_value)
    return result


def run_task(payload: dict[str, Any]) -> None:
    """The handler of :data:`MESSAGE`: run the task, record what became of it. A task that raises fails the
    message too, so icc retries it (its queue's retries and backoff)."""
    from icc.contrib.django.models import TaskRecord  # lazy: a model: only once the apps are loaded

    record = TaskRecord.objects.get(id=payload["id"])
    now = timezone.now()
    record.status = TaskResultStatus.RUNNING
    record.started_at = record.started_at or now
    record.last_attempted_at = now
    record.worker_ids = [*record.worker_ids, _worker_id()]
    record.save()
    result = _result(record)
    try:
        if result.task.takes_context:
            value = result.task.call(TaskContext(task_result=result), *record.args, **record.kwargs)
        else:
            value = result.task.call(*record.args, **record.kwargs)
    except BaseException as exc:
        record.status = TaskResultStatus.FAILED
        record.finished_at = timezone.now()
        record.errors = [
            *record.errors,
            {
                "exception_class_path": f"{type(exc).__module__}.{type(exc).__qualname__}",
                "traceback": "".join(traceback.format_exception(exc)),
            },
        ]
        record.save()
        raise
    record.status = TaskResultStatus.SUCCESSFUL
    record.finished_at = timezone.now()
    record.return_value = value
    record.save()


@icc.hookimpl
def register_handlers(register: Any) -> None:
    register(MESSAGE, run_task, queue="async")
