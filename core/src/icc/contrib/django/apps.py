"""The Django app ``icc.contrib.django``: installs icc's framework hooks when Django starts (every process that
calls ``django.setup()``: ``manage.py icc run``, its supervisors and consumers, web workers)."""

from __future__ import annotations

from django.apps import AppConfig


class IccConfig(AppConfig):  # type: ignore[misc]  # Django has no type hints here
    name = "icc.contrib.django"
    label = "icc"
    verbose_name = "icc"

    def ready(self) -> None:
        from icc.contrib.django import checks, integration  # lazy: Django's place: the app registry is ready

        integration.install()
        checks.register()
