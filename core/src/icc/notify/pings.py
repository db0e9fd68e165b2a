"""icc's built-in heartbeat plugin: pings a monitoring service when a run starts and when it ends.

``[monitor] ping_url`` applies to every job (healthchecks.io's convention, also Better Stack's and Cronitor's
ping URLs): ``{url}/start`` before a run, ``{url}`` after a run that succeeded, ``{url}/fail`` after one that
failed, timed out or was found abandoned. ``{job}`` in the URL is the URL-quoted job name. A job opts out
with ``without_pings()``; its own URLs (``ping_before``, ``then_ping``, ``ping_on_success``,
``ping_on_failure``) are called either way.

A ping never fails a run and never holds it up for long: all the pings of one event share ``[monitor]
timeout`` (5 s) with their retries; what is not answered by then is given up. A failure is recorded in the state
store (meta key ``ping:<job>``) and shown by ``icc status JOB`` and ``icc metrics``; the log gets one warning per
endpoint (scheme, host and port) at most every :data:`WARN_EVERY` seconds across every process sharing the store
(meta key ``ping.warned:<endpoint>``), so a monitoring service that is down does not make cron mail every minute.
URLs are shown redacted (:func:`icc.urls.redact`).

Only http and https are followed on a redirect, and never from https to http. User info in a URL
(``https://user:secret@host/...``) is sent as HTTP basic authentication, to that host only (not on a redirect).
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from icc import logs
from icc._version import __version__
from icc.errors import StateError
from icc.hookspecs import hookimpl
from icc.store import open_store
from icc.urls import JOB_PLACEHOLDER, basic_auth, redact

if TYPE_CHECKING:
    import urllib.request
    from http.client import HTTPMessage

    from icc.config import Config
    from icc.jobs import Job, RunContext, RunResult

__all__ = [
    "FAILED",
    "RAN",
    "Ping",
    "PingFailure",
    "after_run",
    "before_run",
    "fail_urls",
    "pings_for",
    "send",
]

log = logs.get(__name__)

FAILED = frozenset({"failed", "timed_out", "abandoned"})  # "/fail" and ping_on_failure
RAN = frozenset({"succeeded", "failed", "timed_out", "abandoned", "stopped"})  # then_ping: a run that ended
BODY_LIMIT = 10_000  # bytes of output sent (healthchecks.io keeps the first 10,000 bytes of a ping body)
ATTEMPTS = 3
META_PREFIX = "ping:"
QUIET_HOST = 60.0  # seconds a host that left a ping unanswered is not asked again by this process
WARN_EVERY = 3600.0  # seconds between two warnings in the log about failed pings to one endpoint
WARNED_PREFIX = "ping.warned:"
_TIMED_OUT = "timed out"
REDIRECT_REFUSED = "redirect refused"

# host -> monotonic time until which it is not asked: a tick with many jobs waits for a hung service once.
_unanswered: dict[str, float] = {}

_config: Config | None = None

# The settings without which these hooks do nothing for a job that has no pings of its own (icc's consumer
# jobs): with none of them set, the light cron minute (icc.tick.light) may run those jobs without loading
# the plugins. docs/plugins.md.
ICC_RUN_HOOK_SETTINGS = ("monitor.ping_url",)


@dataclass(frozen=True)
class Ping:
    """One request: the real URL, and how it may be shown."""

    url: str
    shown: str


@dataclass(frozen=True)
class PingFailure:
    ping: Ping
    error: str


@hookimpl
def configure(config: Config) -> None:
    global _config
    _config = config


def _global(template: str, job: str, suffix: str) -> Ping:
    """``{url}{suffix}`` with ``{job}`` replaced; the suffix goes at the end of the path, before any query."""
    name = quote(job, safe="")
    parts = urlsplit(template.replace(JOB_PLACEHOLDER, name))
    url = urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix if suffix else parts.path))
    shown_parts = urlsplit(redact(template, keep={JOB_PLACEHOLDER}).replace(JOB_PLACEHOLDER, name))
    path = shown_parts.path.rstrip("/") + suffix if suffix else shown_parts.path
    return Ping(url, urlunsplit(shown_parts._replace(path=path)))


def pings_for(job: Job, event: str, ping_url: str | None) -> list[Ping]:
    """The requests for ``event``: ``"start"`` or an outcome (``succeeded``, ``failed``, ...)."""
    notify = job.schedule.notifications
    found: list[Ping] = []
    if ping_url and notify.pings:
        suffix = {"start": "/start", "succeeded": ""}.get(event, "/fail" if event in FAILED else None)
        if suffix is not None:
            found.append(_global(ping_url, job.name, suffix))
    own: list[str] = []
    if event == "start":
        own += notify.ping_before
    else:
        if event in RAN:
            own += notify.then_ping
        if event == "succeeded":
            own += notify.ping_on_success
        if event in FAILED:
            own += notify.ping_on_failure
    found += [Ping(url, redact(url)) for url in own]
    return list(dict.fromkeys(found))


def fail_urls(job: str, notify: Mapping[str, Any], ping_url: str | None) -> list[str]:
    """The ``/fail`` URLs of ``job`` from its stored ``notify`` definition: ``[monitor] ping_url``'s (unless
    ``without_pings()``) and its own ``ping_on_failure``; a stale job (:mod:`icc.notify.freshness`) pings them."""
    found: list[str] = []
    if ping_url and notify.get("pings", True) is not False:
        found.append(_global(ping_url, job, "/fail").url)
    found += [url for url in notify.get("ping_on_failure", ()) if isinstance(url, str)]
    return list(dict.fromkeys(found))


def _body(result: RunResult) -> bytes:
    """The output tail (and the error), at most :data:`BODY_LIMIT` bytes: the end, where the error is."""
    text = result.output or ""
    if result.error:
        text += ("\n" if text and not text.endswith("\n") else "") + result.error
    data = text.encode("utf-8", "replace")
    if len(data) > BODY_LIMIT:
        data = data[-BODY_LIMIT:].decode("utf-8", "ignore").encode("utf-8")
    return data


def _request_once(ping: Ping, body: bytes, timeout: float) -> str | None:
    """One request; None when it was answered 2xx, else what went wrong (with the URL shown redacted)."""
    import urllib.error  # lazy: only a job with a ping URL: urllib.request loads http.client and ssl (~60 ms)
    import urllib.request  # lazy: as above

    url, authorization = basic_auth(ping.url)
    request = urllib.request.Request(  # noqa: S310  # http(s) only: checked where the URL was given
        url,
        data=body or None,  # GET without a body, POST with one
        headers={"User-Agent": f"icc/{__version__}", "Content-Type": "text/plain; charset=utf-8"},
    )
    if authorization is not None:
        request.add_unredirected_header("Authorization", authorization)  # never sent on to a redirect's host
    try:
        with _opener().open(request, timeout=timeout) as response:
            response.read(1024)
            return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except TimeoutError:
        return _TIMED_OUT
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return _TIMED_OUT
        return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    except (OSError, ValueError) as exc:  # a timeout while reading, a reset connection, a bad URL
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    """urllib's opener, with redirects followed to http and https URLs only, and never from https to http."""
    import urllib.error  # lazy: as in _request_once
    import urllib.request  # lazy: as in _request_once

    class RedirectHandler(urllib.request.HTTPRedirectHandler):
        def redirect_request(
            self,
            req: urllib.request.Request,
            fp: IO[bytes],
            code: int,
            msg: str,
            headers: HTTPMessage,
            newurl: str,
        ) -> urllib.request.Request | None:
            old_scheme = urlsplit(req.full_url).scheme.lower()
            new_scheme = urlsplit(newurl).scheme.lower()
            if new_scheme not in ("http", "https") or (old_scheme == "https" and new_scheme == "http"):
                raise urllib.error.HTTPError(
                    req.full_url,
                    code,
                    f"{REDIRECT_REFUSED} to a {new_scheme}: URL (only http and https are followed, never from "
                    "https to http)",
                    headers,
                    fp,
                )
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(RedirectHandler)


def _permanent(error: str) -> bool:
    """A 4xx answer other than 408 and 429, or a refused redirect, will not change by asking again."""
    if REDIRECT_REFUSED in error:
        return True
    return error.startswith("HTTP 4") and not error.startswith(("HTTP 408", "HTTP 429"))


def send(pings: Sequence[Ping], body: bytes, *, timeout: float) -> list[PingFailure]:
    """Send every ping in parallel, each retried up to :data:`ATTEMPTS` times, all within ``timeout`` seconds.

    Returns the pings that were not answered 2xx in time. A ping still waiting at the deadline is given up (its
    thread is a daemon and ends with its socket timeout); the caller is never held up longer. A host that left a
    ping unanswered is not asked again by this process for :data:`QUIET_HOST` seconds (recorded as not sent), so
    a tick running many jobs waits for a hung monitoring service once, not once per job.
    """
    if not pings:
        return []
    start = time.monotonic()
    deadline = start + timeout
    no_answer = f"no answer within {timeout:g}s (given up)"
    errors: dict[Ping, str] = {}
    lock = threading.Lock()

    def attempt(ping: Ping) -> None:
        error = no_answer
        for number in range(ATTEMPTS):
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                break
            error = _request_once(ping, body, remaining) or ""
            if error == _TIMED_OUT:
                error = no_answer
                break
            if not error or _permanent(error):
                break
            time.sleep(min(0.25 * 2**number, max(0.0, deadline - time.monotonic())))
        with lock:
            if error:
                errors[ping] = error
            else:
                errors.pop(ping, None)

    threads = []
    for ping in pings:
        host = _host(ping.url)
        if _unanswered.get(host, 0.0) > start:
            errors[ping] = f"not sent: {host} left a ping unanswered less than {QUIET_HOST:g}s ago"
            continue
        errors[ping] = no_answer
        thread = threading.Thread(target=attempt, args=(ping,), name="icc-ping", daemon=True)
        thread.start()
        threads.append((ping, thread))
    for _ping, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        failed = [PingFailure(ping, errors[ping]) for ping in pings if ping in errors]
    for failure in failed:
        if failure.error == no_answer:
            _unanswered[_host(failure.ping.url)] = time.monotonic() + QUIET_HOST
    return failed


def _host(url: str) -> str:
    try:
        return urlsplit(url).netloc.rpartition("@")[2].lower()
    except ValueError:
        return ""


def _endpoint(ping: Ping) -> str:
    """Where a ping goes, as it may be shown: ``https://hc-ping.com`` (scheme, host and port; no secret)."""
    try:
        parts = urlsplit(ping.shown)
    except ValueError:
        return "***"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.scheme else "***"


def _record(job: str, event: str, failures: list[PingFailure]) -> list[str]:
    """Keep the last failure (or the last success) in the state store for ``icc status JOB``; returns the
    endpoints of ``failures`` whose warning is due (none printed about them for :data:`WARN_EVERY` seconds, by
    any process sharing the store), each claimed in the store so that only this process prints it."""
    if _config is None:
        return sorted({_endpoint(f.ping) for f in failures})
    now = time.time()

    def change(old: str | None) -> str | None:
        try:
            state = json.loads(old) if old else {}
        except ValueError:
            state = {}
        if not isinstance(state, dict):
            state = {}
        if failures:
            first = failures[0]
            state["failed"] = {
                "at": now,
                "event": event,
                "url": first.ping.shown,
                "error": "; ".join(f"{f.ping.shown}: {f.error}" for f in failures),
            }
        else:
            state["ok_at"] = now
        return json.dumps(state, sort_keys=True)

    stamp = repr(now)

    def warned(old: str | None) -> str | None:
        try:
            last = float(old) if old else None
        except ValueError:
            last = None
        return stamp if last is None or not 0 <= now - last < WARN_EVERY else old

    due: list[str] = []
    try:
        store = open_store(_config)
        try:
            # Pings that worked only matter after one that failed: most runs read, they do not write.
            if failures or last_failure(store.get_meta(META_PREFIX + job)) is not None:
                store.update_meta(META_PREFIX + job, change)
            for endpoint in sorted({_endpoint(f.ping) for f in failures}):
                if store.update_meta(WARNED_PREFIX + endpoint, warned) == stamp:
                    due.append(endpoint)
        finally:
            store.close()
    except StateError as exc:  # never fails the run: say it where the run's log goes
        log.warning("could not record the pings of %s: %s", job, exc)
        return sorted({_endpoint(f.ping) for f in failures})
    return due


def ping(job: Job, event: str, body: bytes = b"") -> list[PingFailure]:
    """Send the pings of ``event`` for ``job`` and record how they went; returns the failures.

    Each failure is logged at DEBUG (`-v`); a WARNING names each failing endpoint at most every :data:`WARN_EVERY`
    seconds (see :func:`_record`)."""
    config = _config
    ping_url = config.monitor.ping_url if config is not None else None
    timeout = config.monitor.timeout if config is not None else 5.0
    pings = pings_for(job, event, ping_url)
    if not pings:
        return []
    failures = send(pings, body, timeout=timeout)
    for failure in failures:
        log.debug("ping %s for %s (%s) failed: %s", failure.ping.shown, job.name, event, failure.error)
    due = sorted({_endpoint(f.ping) for f in failures})
    with contextlib.suppress(Exception):  # recording is best effort, a run is never broken by it
        due = _record(job.name, event, failures)
    for endpoint in due:
        failure = next(f for f in failures if _endpoint(f.ping) == endpoint)
        log.warning(
            "pings to %s are failing (%s for %s, %s: %s); not repeated for %s: see `icc status %s` and "
            "icc_job_ping_failing in `icc metrics`",
            endpoint,
            failure.ping.shown,
            job.name,
            event,
            " ".join(failure.error.split()),
            "an hour" if WARN_EVERY == 3600 else f"{WARN_EVERY:g}s",
            job.name,
        )
    return failures


@hookimpl
def before_run(job: Job, run: RunContext) -> None:
    ping(job, "start")


@hookimpl
def after_run(job: Job, run: RunContext, result: RunResult) -> None:
    if result.outcome in RAN:
        ping(job, result.outcome, _body(result))


def last_failure(meta: str | None) -> dict[str, object] | None:
    """From the ``ping:<job>`` meta value: the last failure, with ``since_ok`` True when a later ping worked."""
    try:
        state = json.loads(meta) if meta else None
    except ValueError:
        return None
    if not isinstance(state, dict) or not isinstance(state.get("failed"), dict):
        return None
    failed = dict(state["failed"])
    ok_at = state.get("ok_at")
    failed["ok_since"] = isinstance(ok_at, int | float) and ok_at > failed.get("at", 0)
    return failed
