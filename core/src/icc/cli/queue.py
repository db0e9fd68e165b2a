"""``icc consume`` and ``icc failed``: the queue commands.

icc.cli imports this module for every command, so what only one of these commands needs (the consumer, the
plugin host, the transport) is imported in its function."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

import click

from icc import logs
from icc.cli import completion
from icc.cli import render as ui
from icc.errors import IccError, QueueError
from icc.report import iso, queues

if TYPE_CHECKING:
    from icc.config import Config
    from icc.queue.consumer import ConsumeStats

__all__ = ["consume", "failed", "queue"]

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def _user_errors() -> Iterator[None]:
    """An :class:`icc.IccError` is printed without a traceback and sets the exit code."""
    try:
        yield
    except IccError as exc:
        logs.ensure().error("%s", exc)
        raise SystemExit(exc.exit_code) from None


def _config(env: Any) -> Config:
    config: Config = env.config
    return config


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from icc.queue.limits import parse_size  # lazy: icc.queue (~40 ms): --memory-limit only

    try:
        return parse_size(value)
    except QueueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _seconds(option: str, value: float | None, *, positive: bool) -> float | None:
    """``--time-limit`` and ``--sleep``: a finite number of seconds (click's FloatRange lets NaN through)."""
    if value is None or (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        return value
    bound = "> 0" if positive else ">= 0"
    raise QueueError(f"{option} must be a finite number of seconds {bound}, not {value:g}")


@click.command()
@click.argument("queues", nargs=-1, shell_complete=completion.queues)
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop after S seconds, idle or not; a handler still running then is interrupted.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Stop after N messages.")
@click.option(
    "--memory-limit",
    callback=_size,
    metavar="SIZE",
    help="Stop when resident memory reaches SIZE (128M, 1G).",
)
@click.option("--failure-limit", type=click.IntRange(min=1), help="Stop after N handler failures.")
@click.option(
    "--sleep",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds to wait before polling again when the queues are empty (on SQLite on Linux the consumer waits "
    "for its queue database to change instead, and looks anyway every 15 s or every --sleep, if longer).",
)
@click.option("--stop-when-empty", is_flag=True, help="Stop as soon as no message is available.")
@click.option("-q", "--quiet", is_flag=True, help="No summary line at exit (failures are still reported).")
@click.option(
    "--stop",
    "stop_workers",
    is_flag=True,
    help="Consume nothing: ask every running consumer to stop after its current message.",
)
@click.pass_obj
def consume(
    env: Any,
    queues: tuple[str, ...],
    time_limit: float | None,
    limit: int | None,
    memory_limit: int | None,
    failure_limit: int | None,
    sleep: float,
    stop_when_empty: bool,
    quiet: bool,
    stop_workers: bool,
) -> None:
    """Handle the messages of QUEUES, in priority order (the first queue is drained first).

    Stops on the first limit reached, or on SIGTERM/SIGINT after the current message; the time limit
    holds while the queues are idle too, and interrupts a handler still running at it. Prints a
    summary line at exit unless --quiet. With --stop, asks the running consumers to stop instead.
    """
    if stop_workers:
        if queues:
            raise click.UsageError("--stop asks every consumer to stop: give no QUEUES with it")
        _request_stop(env)
        return
    if not queues:
        raise click.UsageError("Missing argument 'QUEUES...'.")
    with _user_errors():
        from icc.plugins import load_plugins  # lazy: icc consume only: the plugin host
        from icc.queue.consumer import Consumer, Limits  # lazy: icc consume only: the consumer (~55 ms)
        from icc.queue.dispatch import (  # lazy: icc consume only
            handler_queue_warnings,
            open_transport,
            validate_queue,
        )

        time_limit = _seconds("--time-limit", time_limit, positive=True)
        sleep = _seconds("--sleep", sleep, positive=False) or 0.0
        config = _config(env)
        for queue in queues:
            validate_queue(config, queue)
        host = load_plugins(config)
        specs = host.collect_handlers()  # first: a handler name two plugins use is reported as a failure
        log = logs.ensure()
        for failure in host.failures:
            log.warning("%s", failure)
        for line in handler_queue_warnings(config, specs):
            log.warning("%s", line)
        handlers = {name: spec.handler for name, spec in specs.items()}
        log.debug(
            "consuming %s with handlers for %s", ", ".join(queues), ", ".join(sorted(handlers)) or "nothing"
        )

        def hard_exit(stats: ConsumeStats) -> None:
            if not quiet:
                log.info("%s", stats.summary())
            sys.stdout.flush()
            sys.stderr.flush()

        consumer = Consumer(
            open_transport(config, limit=time_limit),
            handlers,
            queues,
            policy=config.queue,
            limits=Limits(
                time_limit=time_limit,
                limit=limit,
                memory_limit=memory_limit,
                failure_limit=failure_limit,
                sleep=sleep,
                stop_when_empty=stop_when_empty,
                grace=config.grace,
            ),
            report=lambda line: log.warning("%s", line, extra={"bare": True}),
            hard_exit=hard_exit,
            paused=_queues_paused(config),
        )
        stats = consumer.run()
        if not quiet:
            log.info("%s", stats.summary())


def _queues_paused(config: Config) -> Callable[[], bool]:
    """Whether `icc pause --queues` is in force now (read from the state store, if there is one)."""

    from icc.pause import Pause, current  # lazy: icc consume only
    from icc.statedir import FileWatch  # lazy: icc consume only
    from icc.store import open_store, sqlite_file, store_present  # lazy: icc consume only
    from icc.store.protocol import StateStore  # lazy: icc consume only

    store: StateStore | None = None
    # SQLite: read again only when the state database's files changed (asked twice a second by an idle consumer).
    path = None if config.store.url is not None else str(sqlite_file(config.state_dir))
    watch = None if path is None else FileWatch(path)
    answer: Pause | None = None
    read_at = 0  # the generation of the files the answer was read from

    def paused() -> bool:
        nonlocal store, answer, read_at
        now = time.time()
        if store is None:
            if not store_present(config):
                return False  # never scanned: nothing can have paused it
            store = open_store(config)
        generation = 0 if watch is None else watch.generation(now)
        if not generation or generation != read_at:
            answer = current(store, now)
            read_at = generation
        return answer is not None and answer.queues and answer.in_force(now)

    return paused


def _request_stop(env: Any) -> None:
    with _user_errors():
        from icc.queue.dispatch import open_transport  # lazy: icc consume --stop only: icc.queue (~55 ms)

        transport = open_transport(_config(env))
        try:
            transport.request_stop()
        finally:
            transport.close()
        click.echo("asked every running consumer to stop after its current message")


# --- icc failed ---------------------------------------------------------------------------------------


def _when(epoch: float, zone: str) -> str:

    return datetime.fromtimestamp(epoch, tz=UTC).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def _one_line(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@click.group()
def failed() -> None:
    """Messages that used up their retries (or could not be handled at all)."""


@failed.command("list")
@click.option("--queue", help="Only this queue.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of the messages (one document).")
@click.pass_obj
def failed_list(env: Any, queue: str | None, as_json: bool) -> None:
    """List failed messages, oldest failure first."""
    with _user_errors():
        from icc.queue.dispatch import open_transport  # lazy: icc failed only: icc.queue (~55 ms)

        config = _config(env)
        messages = open_transport(config).failed_list(queue=queue)
        if as_json:
            document = [_as_dict(message, config.timezone) for message in messages]
            click.echo(json.dumps(document, ensure_ascii=False, indent=2))
            return
        if not messages:
            click.echo("no failed messages")
            return

        rows = [
            [
                str(m.id),
                m.queue,
                m.name,
                str(m.attempts),
                _when(m.failed_at, config.timezone),
                _one_line(m.reason),
            ]
            for m in messages
        ]
        ui.table(
            f"{len(messages)} failed message{'s' if len(messages) != 1 else ''}",
            ["id", "queue", "name", "attempts", "failed at", "reason"],
            rows,
        )


def _as_dict(message: Any, zone: str) -> dict[str, Any]:
    """A failed message for ``--json``: times in ISO 8601 in the configured zone, as everywhere."""

    errors = []
    for record in message.errors:
        entry = dict(record)
        if isinstance(entry.get("at"), int | float):
            entry["at"] = iso(entry["at"], zone)
        errors.append(entry)
    return {
        "id": message.id,
        "queue": message.queue,
        "name": message.name,
        "payload": message.payload,
        "attempts": message.attempts,
        "created_at": iso(message.created_at, zone),
        "failed_at": iso(message.failed_at, zone),
        "reason": message.reason,
        "errors": errors,
    }


@failed.command("show")
@click.argument("message_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="As a JSON object.")
@click.pass_obj
def failed_show(env: Any, message_id: int, as_json: bool) -> None:
    """Show one failed message: payload, reason and error history with tracebacks."""
    with _user_errors():
        from icc.queue.dispatch import open_transport  # lazy: icc failed only: icc.queue (~55 ms)

        _check_ids([message_id])
        config = _config(env)
        message = open_transport(config).failed_get(message_id)
        if message is None:
            raise QueueError(f"no failed message with id {message_id}; see icc failed list")
        if as_json:
            click.echo(json.dumps(_as_dict(message, config.timezone), ensure_ascii=False, indent=2))
            return
        zone = config.timezone
        lines = [
            f"id:         {message.id}",
            f"queue:      {message.queue}",
            f"name:       {message.name}",
            f"attempts:   {message.attempts}",
            f"created at: {_when(message.created_at, zone)}",
            f"failed at:  {_when(message.failed_at, zone)}",
            f"reason:     {message.reason}",
            f"payload:    {message.payload}",
        ]
        if message.errors:
            lines.append("errors:")
            for record in message.errors:
                at = record.get("at")
                when = _when(at, zone) if isinstance(at, int | float) else "?"
                lines.append(f"  attempt {record.get('attempt', '?')} at {when}: {record.get('error', '')}")
                trace = record.get("traceback")
                if trace:
                    lines += ["    " + line for line in str(trace).rstrip().splitlines()]
        click.echo("\n".join(lines))


_MAX_ID = 2**63 - 1


def _check_ids(ids: Sequence[int]) -> None:
    for message_id in ids:
        if not 1 <= message_id <= _MAX_ID:
            raise QueueError(
                f"no failed message with id {message_id}: message ids are 1 to {_MAX_ID}; see icc failed list"
            )


def _ids_or_all(ids: tuple[int, ...], all_: bool, verb: str) -> list[int] | None:
    if all_ and ids:
        raise click.UsageError("give message ids or --all, not both")
    if not all_ and not ids:
        raise click.UsageError(f"give the ids of the messages to {verb}, or --all")
    return None if all_ else list(ids)


@failed.command("retry")
@click.argument("message_ids", nargs=-1, type=int)
@click.option("--all", "all_", is_flag=True, help="Every failed message.")
@click.pass_obj
def failed_retry(env: Any, message_ids: tuple[int, ...], all_: bool) -> None:
    """Put failed messages back on their queue, with their attempts reset."""
    ids = _ids_or_all(message_ids, all_, "retry")
    with _user_errors():
        from icc.queue.dispatch import open_transport  # lazy: icc failed only: icc.queue (~55 ms)

        _check_ids(ids or [])
        moved = open_transport(_config(env)).failed_retry(ids)
        _report_ids(moved, ids, "back on their queue", "back on its queue")


@failed.command("remove")
@click.argument("message_ids", nargs=-1, type=int)
@click.option("--all", "all_", is_flag=True, help="Every failed message.")
@click.pass_obj
def failed_remove(env: Any, message_ids: tuple[int, ...], all_: bool) -> None:
    """Delete failed messages for good."""
    ids = _ids_or_all(message_ids, all_, "remove")
    with _user_errors():
        from icc.queue.dispatch import open_transport  # lazy: icc failed only: icc.queue (~55 ms)

        _check_ids(ids or [])
        removed = open_transport(_config(env)).failed_remove(ids)
        _report_ids(removed, ids, "removed", "removed")


def _report_ids(done: list[int], asked: list[int] | None, many: str, one: str) -> None:
    if done:
        listed = ", ".join(map(str, done))
        click.echo(
            f"{len(done)} message{'s' if len(done) != 1 else ''} {many if len(done) != 1 else one}: {listed}"
        )
    elif asked is None:
        click.echo("no failed messages")
    missing = sorted(set(asked or ()) - set(done))
    if missing:
        logs.ensure().error("no failed message with id %s", ", ".join(map(str, missing)))
        sys.exit(1)


# --- icc queue ----------------------------------------------------------------------------------------


@click.group()
def queue() -> None:
    """Queues: what they hold, and stopping their consumers."""


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@queue.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable (one object per queue, in a list).")
@click.pass_obj
def queue_stats(env: Any, as_json: bool) -> None:
    """Per queue: ready, delayed, in flight (and by which consumers), oldest message's age, failed."""

    with _user_errors():
        found = queues(_config(env), time.time())
        if as_json:
            click.echo(json.dumps([q.to_json() for q in found], indent=2))
            return
        rows = [
            [
                q.queue,
                str(q.ready),
                str(q.delayed),
                str(q.in_flight),
                _age(q.oldest_age),
                str(q.failed),
                ", ".join(f"{owner} ({n})" for owner, n in q.owners.items()) or "-",
            ]
            for q in found
        ]
        ui.table(
            "icc queue stats", ["queue", "ready", "delayed", "in flight", "oldest", "failed", "held by"], rows
        )


@queue.command("stop-workers")
@click.pass_obj
def stop_workers(env: Any) -> None:
    """Ask every running consumer to stop after its current message (like `icc consume --stop`)."""
    _request_stop(env)
