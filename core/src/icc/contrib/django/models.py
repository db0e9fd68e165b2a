"""What Django's tasks framework reads back through :class:`icc.contrib.django.tasks.IccTaskBackend`: one row per
enqueued task (its status, times, return value and errors). The message itself is on icc's queue."""

from __future__ import annotations

from django.db import models


class TaskRecord(models.Model):  # type: ignore[misc]  # Django has no type hints here
    id = models.CharField(primary_key=True, max_length=64)
    task_path = models.CharField(max_length=300)
    backend = models.CharField(max_length=100)
    queue_name = models.CharField(max_length=100)
    priority = models.IntegerField(default=0)
    run_after = models.DateTimeField(null=True)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    status = models.CharField(max_length=20, default="READY")
    enqueued_at = models.DateTimeField(null=True)
    started_at = models.DateTimeField(null=True)
    last_attempted_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    return_value = models.JSONField(null=True)
    errors = models.JSONField(default=list)
    worker_ids = models.JSONField(default=list)

    class Meta:
        app_label = "icc"
