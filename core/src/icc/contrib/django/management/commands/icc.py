"""``python manage.py icc <command> ...``: every icc command, with Django set up and icc configured from
``settings.ICC``."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand

from icc.cli import cli
from icc.contrib.django import integration


class Command(BaseCommand):  # type: ignore[misc]  # Django has no type hints here
    help = (
        "Run an icc command with Django set up: manage.py icc run | status | consume | exec JOB | crontab ..."
    )

    def run_from_argv(self, argv: list[str]) -> None:
        # icc parses its own arguments (click): Django's parser would refuse icc's options.
        run(argv[0], argv[2:])

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("args", nargs="*")

    def handle(self, *args: Any, **options: Any) -> None:  # call_command("icc", "status")
        run("manage.py", [str(a) for a in args])


def run(script: str, args: list[str]) -> None:

    integration.invoked_as(script)
    name = "django-admin" if os.path.basename(script) == "__main__.py" else os.path.basename(script)
    cli.main(args=args, prog_name=f"{name} icc")
