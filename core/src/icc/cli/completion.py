"""Shell completion (click's ``_ICC_COMPLETE``): job names from the state store, queue names from the
configuration. A project with no configuration or no state store completes nothing; completion never fails
(a traceback in the middle of a command line helps nobody) and never writes (no state directory is made)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click
    from click.shell_completion import CompletionItem

    from icc.config import Config


def _config(ctx: click.Context) -> Config | None:
    from icc.config import load_config  # lazy: ~17 ms; icc.cli imports this module for every command

    try:
        return load_config(ctx.find_root().params.get("config_path"))
    except Exception:  # no configuration, or a broken one: nothing to complete
        return None


def _job_names(ctx: click.Context, incomplete: str, *, include_removed: bool) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem  # lazy: click imports it only to complete

    from icc.store import open_store, store_present  # lazy: only when completing job names

    config = _config(ctx)
    if config is None or not store_present(config):
        return []
    try:
        store = open_store(config)
        try:
            names = [rec.name for rec in store.jobs(include_removed=include_removed)]
        finally:
            store.close()
    except Exception:  # an unreadable store: `icc status` says why
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def jobs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The jobs of the state store (those ``icc scan`` registered), for ``exec``, ``enable`` and ``disable``."""
    return _job_names(ctx, incomplete, include_removed=False)


def known_jobs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Every job the store knows, removed ones too (their history is still there): ``status`` and ``logs``."""
    return _job_names(ctx, incomplete, include_removed=True)


def queues(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The configured queues (``consumers.queues`` and ``[queues.<name>]``), for ``icc consume``."""
    from click.shell_completion import CompletionItem  # lazy: click imports it only to complete

    from icc.queue.dispatch import known_queues  # lazy: icc.queue (~55 ms) only when completing queue names

    config = _config(ctx)
    if config is None:
        return []
    given = set(ctx.params.get("queues") or ())
    return [CompletionItem(q) for q in known_queues(config) if q.startswith(incomplete) and q not in given]
