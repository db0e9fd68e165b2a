"""The dashboard's pages, its ``/api/*`` JSON and its actions (DESIGN.md, Round 3).

Every page and API answer is built from :mod:`icc.report`'s records (``icc status --json``'s); the store is read
in worker threads, each with a connection of its own. Actions are POST only; each one is recorded in the store
(``web_actions``: what, on what, when, from which address) before it answers. "Run now" starts ``icc exec JOB``
as a detached process in the project's directory with ``ICC_CONFIG`` set: the web process runs no user code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from icc import framework
from icc import pause as pauses
from icc import report as facts
from icc.config import Config
from icc.errors import IccError
from icc.store import open_store, open_transport
from icc.store.protocol import StateStore
from icc.tick.coordinator import NOT_EVALUATED
from icc.web import views
from icc.web.auth import SESSION_COOKIE, SESSION_SECONDS, Guard

PAGE_SIZE = 100  # jobs per page of the jobs page and the timeline
HISTORY_PAGE = 50  # runs per page of a job's history
CHART_RUNS = 100  # runs in a job's duration chart
STRIP_RUNS = 30  # outcomes in a job's strip on the jobs page
STAMP_EVERY = 0.4  # seconds between two reads of the change stamp while browsers poll
STAMP_STALE = 2.0  # seconds after which a request reads the stamp itself (nobody polled for a while)
STAMP_IDLE = 10.0  # seconds without a poll after which the background reads stop
TIMELINE_WINDOWS = {1: 1, 6: 5, 24: 15, 72: 60}  # hours shown -> minutes per cell
SORT_KEYS = ("name", "plugin", "schedule", "next", "last", "age", "running", "state")
OUTCOME_FILTERS = ("succeeded", "failed", "timed_out", "abandoned", "stopped", "running", "never")


@dataclass
class Visitor:
    """Who is asking: through a bearer token or a session (``sid``), and its CSRF token for the forms."""

    sid: str | None
    bearer: bool
    csrf: str
    new_cookie: str | None = None
    stamp: str = ""  # the store's change stamp before the page's data was read (the live update compares it)


@dataclass
class Site:
    """The dashboard's state: the configuration, the guard, the templates, a store per worker thread."""

    config: Config
    guard: Guard
    templates: jinja2.Environment
    _local: threading.local = field(default_factory=threading.local)
    _stamp: tuple[float, str] = (0.0, "")
    _stamp_lock: threading.Lock = field(default_factory=threading.Lock)
    _stamp_wanted: float = 0.0
    _stamper: threading.Thread | None = None
    _transport_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def zone(self) -> str:
        return self.config.timezone

    def store(self) -> StateStore:
        """This worker thread's store connection (a connection is used by one thread at a time)."""
        found: StateStore | None = getattr(self._local, "store", None)
        if found is None:
            found = self._local.store = open_store(self.config)
        return found

    def transport_call(self, work: Callable[[Any], Any]) -> Any:
        """``work(transport)`` under a lock: the queue transport is one per process, shared by the threads."""

        with self._transport_lock:
            return work(open_transport(self.config))

    def fresh_stamp(self) -> str | None:
        """The stamp a background thread keeps fresh while browsers poll (no store read: the event loop answers
        it), or None when it is older than :data:`STAMP_STALE` (then :meth:`stamp` reads it)."""
        self._stamp_wanted = time.monotonic()
        at, value = self._stamp
        return value if value and self._stamp_wanted - at < STAMP_STALE else None

    def stamp(self) -> str:
        """What changed, in a few bytes: the store's change stamp and the queues' figures. Read now, and from
        then on every :data:`STAMP_EVERY` seconds by a background thread for as long as someone polls, so many
        browsers polling cost one read, and none of them waits for it."""
        self._stamp_wanted = time.monotonic()
        if self._stamper is None or not self._stamper.is_alive():
            self._stamper = threading.Thread(
                target=self._keep_stamp, name="icc web: change stamp", daemon=True
            )
            self._stamper.start()
        return self.fresh_stamp() or self._read_stamp()

    def _read_stamp(self) -> str:
        with self._stamp_lock:
            parts: list[Any] = [self.store().change_stamp()]
            parts += [q.to_json() for q in facts.queues(self.config, time.time())]
            value = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]
            self._stamp = (time.monotonic(), value)
            return value

    def _keep_stamp(self) -> None:
        while time.monotonic() - self._stamp_wanted < STAMP_IDLE:
            time.sleep(STAMP_EVERY)
            with contextlib.suppress(IccError):  # the store is away: requests read it themselves and say so
                self._read_stamp()

    def render(
        self, request: Request, visitor: Visitor, template: str, status: int = 200, **context: Any
    ) -> Response:
        context.setdefault("nav", "")
        html = self.templates.get_template(template).render(
            request=request,
            visitor=visitor,
            read_only=self.guard.read_only,
            with_token=self.guard.token is not None,
            zone=self.zone,
            now=time.time(),
            v=views,
            quote=lambda s: quote(str(s), safe=""),
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        return with_cookie(request, response, visitor.new_cookie)


def with_cookie(request: Request, response: Response, cookie: str | None) -> Response:
    if cookie is not None:
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
    return response


def remote(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def wants_json(request: Request) -> bool:
    """An API client: an ``/api/`` route, a bearer token, or JSON asked for."""
    return (
        request.url.path.startswith("/api/")
        or "authorization" in request.headers
        or "application/json" in request.headers.get("accept", "")
    )


MAX_FORM = 64 * 1024  # bytes of a form body: the dashboard's forms hold a token, a CSRF token and a reason


async def read_form(request: Request) -> dict[str, str]:
    """A URL-encoded form body (the dashboard's forms; no multipart), at most :data:`MAX_FORM` bytes."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


# -- who may ask ---------------------------------------------------------------------------------------------------


async def visitor(site: Site, request: Request) -> Visitor | Response:
    """The visitor of a page or API request, or the 401 that refuses it."""
    guard = site.guard
    bearer = guard.bearer(request.headers.get("authorization"))
    if bearer is not None:
        if guard.token_ok(bearer):
            guard.right_token(remote(request))
            return Visitor(sid=None, bearer=True, csrf="")
        await guard.wrong_token(remote(request))
        return refuse(site, request, 401, "wrong token")
    sid = guard.session_id(request.cookies.get(SESSION_COOKIE))
    if sid is not None:
        return Visitor(sid=sid, bearer=False, csrf=guard.csrf_token(sid))
    if guard.token is not None:
        return refuse(site, request, 401, "log in with the dashboard's token")
    cookie = guard.new_session()  # open (loopback, no token): a session all the same, for the CSRF tokens
    sid = guard.session_id(cookie)
    assert sid is not None
    return Visitor(sid=sid, bearer=False, csrf=guard.csrf_token(sid), new_cookie=cookie)


def refuse(site: Site, request: Request, status: int, why: str) -> Response:
    """A refusal: 401 (who are you?) or 403 (not this), as JSON for the API, else a page (the login form for a
    401)."""
    headers = {"WWW-Authenticate": 'Bearer realm="icc"'} if status == 401 else {}
    if wants_json(request):
        return JSONResponse({"error": why}, status_code=status, headers=headers)
    nobody = Visitor(sid=None, bearer=False, csrf="")
    template = "login.html" if status == 401 else "error.html"
    response = site.render(request, nobody, template, status=status, error=why, title="icc")
    response.headers.update(headers)
    return response


Handler = Callable[[Site, Request, Visitor], Awaitable[Response]]


def page(site: Site, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A GET route: the visitor checked first."""

    async def endpoint(request: Request) -> Response:
        who = await visitor(site, request)
        if isinstance(who, Response):
            return who
        try:
            if not wants_json(request):
                cached = site.fresh_stamp()
                who.stamp = cached if cached is not None else await run_in_threadpool(site.stamp)
            return await handler(site, request, who)
        except IccError as exc:
            return problem(site, request, who, 503, " ".join(str(exc).split()))

    return endpoint


def problem(site: Site, request: Request, who: Visitor, status: int, why: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": why}, status_code=status)
    return site.render(request, who, "error.html", status=status, error=why, title="icc")


def action(site: Site, name: str, handler: Callable[..., Any]) -> Callable[[Request], Awaitable[Response]]:
    """A POST action: refused (403) in read-only mode, on a GET, without a valid CSRF token (a form) or bearer
    token (the API); else ``handler(site, form, **path)`` runs in a worker thread, is recorded, and the answer is
    JSON for the API or a redirect back for a form."""

    async def endpoint(request: Request) -> Response:
        if site.guard.read_only:
            return refuse(site, request, 403, "the dashboard is read-only (icc web --read-only)")
        if request.method != "POST":
            response = refuse(site, request, 403, "actions are POST only")
            response.headers["Allow"] = "POST"
            return response
        who = await visitor(site, request)
        if isinstance(who, Response):
            return who
        form = await read_form(request)
        if not who.bearer and not site.guard.csrf_ok(who.sid, str(form.get("csrf") or "")):
            return refuse(site, request, 403, "missing or wrong CSRF token: reload the page and try again")
        params = dict(request.path_params)
        try:
            target, detail = await run_in_threadpool(handler, site, form, **params)
        except LookupError as exc:
            return problem(site, request, who, 404, str(exc.args[0]))
        except IccError as exc:
            return problem(site, request, who, 409, " ".join(str(exc).split()))
        await run_in_threadpool(
            lambda: site.store().record_action(
                name, target, remote=remote(request), at=time.time(), detail=detail
            )
        )
        if who.bearer or wants_json(request):
            return JSONResponse({"ok": True, "action": name, "target": target, "detail": detail})
        back = str(form.get("next") or "/")
        if not back.startswith("/") or back.startswith("//") or "\\" in back:
            back = "/"
        return RedirectResponse(back, status_code=303)

    return endpoint


# -- pages ---------------------------------------------------------------------------------------------------------


def _sort_value(job: facts.JobReport, key: str, now: float) -> Any:
    last = job.last_run
    if key == "plugin":
        return (job.plugin, job.name)
    if key == "schedule":
        return (job.schedule_text, job.name)
    if key == "next":
        return (job.next_run is None, job.next_run or 0.0, job.name)
    if key == "last":
        return (last is None, last.outcome if last else "", job.name)
    if key == "age":
        when = None if last is None else (last.started_at or last.ended_at)
        return (when is None, -(when or 0.0), job.name)
    if key == "running":
        return (-len(job.running), job.name)
    if key == "state":
        return (job.state, job.name)
    return job.name


def _filtered(jobs: tuple[facts.JobReport, ...], plugin: str, outcome: str) -> list[facts.JobReport]:
    found = [j for j in jobs if not j.removed]
    if plugin:
        found = [j for j in found if j.plugin == plugin]
    if outcome == "running":
        found = [j for j in found if j.running]
    elif outcome == "never":
        found = [j for j in found if j.last_run is None]
    elif outcome:
        found = [j for j in found if j.last_run is not None and j.last_run.outcome == outcome]
    return found


def _int_param(request: Request, name: str, default: int, low: int = 1, high: int = 10**9) -> int:
    value = request.query_params.get(name, "")
    return min(high, max(low, int(value))) if value.isdigit() else default


async def jobs_page(site: Site, request: Request, who: Visitor) -> Response:
    plugin = request.query_params.get("plugin", "")
    outcome = request.query_params.get("outcome", "")
    sort = request.query_params.get("sort", "name")
    sort = sort if sort in SORT_KEYS else "name"
    descending = request.query_params.get("dir") == "desc"
    page_no = _int_param(request, "page", 1)

    def gather() -> dict[str, Any]:
        store = site.store()
        report = facts.status(site.config, None, with_plugins=False, store=store)
        now = time.time()
        shown = _filtered(report.jobs, plugin, outcome)
        shown.sort(key=lambda j: _sort_value(j, sort, now), reverse=descending)
        pages = max(1, -(-len(shown) // PAGE_SIZE))
        number = min(page_no, pages)
        on_page = shown[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
        strips = {j.name: list(reversed(store.run_briefs(j.name, limit=STRIP_RUNS))) for j in on_page}
        return {
            "report": report,
            "jobs": on_page,
            "strips": strips,
            "total": len(shown),
            "page": number,
            "pages": pages,
            "plugins": sorted({j.plugin for j in report.jobs if not j.removed}),
        }

    data = await run_in_threadpool(gather)

    def link(**change: Any) -> str:
        params = {"plugin": plugin, "outcome": outcome, "sort": sort, "dir": "desc" if descending else ""}
        params.update({k: str(v) for k, v in change.items()})
        return "/?" + urlencode({k: v for k, v in params.items() if v})

    return site.render(
        request,
        who,
        "jobs.html",
        title="Jobs",
        nav="jobs",
        plugin=plugin,
        outcome=outcome,
        outcomes=OUTCOME_FILTERS,
        sort=sort,
        descending=descending,
        link=link,
        paused=data["report"].paused,
        **data,
    )


async def timeline_page(site: Site, request: Request, who: Visitor) -> Response:
    hours = _int_param(request, "hours", 24)
    hours = hours if hours in TIMELINE_WINDOWS else 24
    page_no = _int_param(request, "page", 1)

    def gather() -> dict[str, Any]:
        store = site.store()
        found = facts.timeline(site.config, None, TIMELINE_WINDOWS[hours], hours=hours, store=store)
        rows = found["jobs"]
        pages = max(1, -(-len(rows) // PAGE_SIZE))
        number = min(page_no, pages)
        return {
            "svg": views.timeline_svg(
                rows[(number - 1) * PAGE_SIZE : number * PAGE_SIZE],
                float(found["start_epoch"]),
                int(found["cell_minutes"]),
                site.zone,
            ),
            "found": found,
            "page": number,
            "pages": pages,
            "paused": facts.PauseReport.of(facts.current_pause(store, time.time())),
        }

    data = await run_in_threadpool(gather)
    return site.render(
        request,
        who,
        "timeline.html",
        title="Timeline",
        nav="timeline",
        hours=hours,
        windows=TIMELINE_WINDOWS,
        **data,
    )


def _job_data(site: Site, name: str, before: int | None) -> dict[str, Any] | None:
    store = site.store()
    report = facts.job_status(site.config, store, name)
    if report is None:
        return None
    now = datetime.now(UTC)
    detail = facts.job_detail(site.config, report, name, 20, 10, now, store=store)
    assert detail is not None
    history = store.run_briefs(name, limit=HISTORY_PAGE + 1, before=before)
    chart = list(reversed(store.run_briefs(name, limit=CHART_RUNS)))
    return {
        "report": report,
        "job": report.jobs[0],
        "detail": detail,
        "history": history[:HISTORY_PAGE],
        "older": history[HISTORY_PAGE - 1].id if len(history) > HISTORY_PAGE else None,
        "chart": views.duration_svg([(r.id, r.duration, r.outcome) for r in chart]),
        "actions": store.actions(name, limit=20),
        "paused": report.paused,
    }


async def job_page(site: Site, request: Request, who: Visitor) -> Response:
    name = request.path_params["name"]
    before = request.query_params.get("before", "")
    data = await run_in_threadpool(_job_data, site, name, int(before) if before.isdigit() else None)
    if data is None:
        return problem(site, request, who, 404, f"no job named {name!r}")
    return site.render(request, who, "job.html", title=name, nav="jobs", name=name, **data)


def _run_data(site: Site, run_id: int) -> dict[str, Any] | None:
    store = site.store()
    run = store.run(run_id)
    if run is None:
        return None
    dead = facts.dead_runs(site.config, store, [run] if run.outcome in ("pending", "running") else [])
    ping = facts.ping_failure(store.get_meta(f"ping:{run.job}"))
    if ping is not None and ping.at is not None and run.started_at is not None:
        ended = run.ended_at or time.time()
        if not run.started_at - 1 <= ping.at <= ended + 60:
            ping = None  # not this run's ping
    else:
        ping = None
    return {
        "run": facts.RunReport.of(run, dead),
        "job": run.job,
        "host": run.host,
        "ping": ping,
        "paused": facts.PauseReport.of(facts.current_pause(store, time.time())),
    }


async def run_page(site: Site, request: Request, who: Visitor) -> Response:
    run_id = request.path_params["run_id"]
    data = await run_in_threadpool(_run_data, site, run_id)
    if data is None:
        return problem(site, request, who, 404, f"no run {run_id}")
    return site.render(request, who, "run.html", title=f"run {run_id}", nav="jobs", **data)


def _queues_data(site: Site, queue: str | None) -> dict[str, Any]:
    now = time.time()
    queues = facts.queues(site.config, now)
    failed = site.transport_call(lambda t: t.failed_list(queue=queue, limit=200)) if queue or queues else []
    return {
        "queues": queues,
        "failed": failed,
        "pretty": _pretty_payload,
        "paused": facts.PauseReport.of(facts.current_pause(site.store(), now)),
    }


def _pretty_payload(payload: str) -> str:
    try:
        return json.dumps(json.loads(payload), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return payload


async def queues_page(site: Site, request: Request, who: Visitor) -> Response:
    data = await run_in_threadpool(_queues_data, site, None)
    return site.render(request, who, "queues.html", title="Queues", nav="queues", queue=None, **data)


async def failed_page(site: Site, request: Request, who: Visitor) -> Response:
    queue = request.path_params["queue"]
    data = await run_in_threadpool(_queues_data, site, queue)
    return site.render(
        request, who, "queues.html", title=f"Failed: {queue}", nav="queues", queue=queue, **data
    )


async def hosts_page(site: Site, request: Request, who: Visitor) -> Response:
    def gather() -> dict[str, Any]:
        store = site.store()
        running: dict[str, list[Any]] = {}
        for run in store.unfinished():
            if run.outcome == "running":
                running.setdefault(run.host or "", []).append(run)
        return {
            "hosts": facts.hosts(site.config, store),
            "running": running,
            "shared": site.config.store.shared,
            "paused": facts.PauseReport.of(facts.current_pause(store, time.time())),
        }

    data = await run_in_threadpool(gather)
    return site.render(request, who, "hosts.html", title="Hosts", nav="hosts", **data)


# -- the API -------------------------------------------------------------------------------------------------------


async def api_jobs(site: Site, request: Request, who: Visitor) -> Response:
    report = await run_in_threadpool(
        lambda: facts.status(site.config, None, with_plugins=False, store=site.store())
    )
    return JSONResponse(report.to_json())


async def api_job(site: Site, request: Request, who: Visitor) -> Response:
    name = request.path_params["name"]

    def gather() -> dict[str, Any] | None:
        store = site.store()
        report = facts.job_status(site.config, store, name)
        if report is None:
            return None
        detail = facts.job_detail(site.config, report, name, 20, 10, datetime.now(UTC), store=store)
        return None if detail is None else detail.to_json(site.zone)

    found = await run_in_threadpool(gather)
    if found is None:
        return JSONResponse({"error": f"no job named {name!r}"}, status_code=404)
    return JSONResponse(found)


async def api_run(site: Site, request: Request, who: Visitor) -> Response:
    run_id = request.path_params["run_id"]
    data = await run_in_threadpool(_run_data, site, run_id)
    if data is None:
        return JSONResponse({"error": f"no run {run_id}"}, status_code=404)
    return JSONResponse({"job": data["job"], **data["run"].to_json(site.zone, full=True)})


async def api_queues(site: Site, request: Request, who: Visitor) -> Response:
    queues = await run_in_threadpool(facts.queues, site.config, time.time())
    return JSONResponse({"queues": [q.to_json() for q in queues]})


async def healthz(request: Request) -> Response:
    """``{"ok": true}`` for anyone (a load balancer's check); with a session or the token also ``stamp``, which
    the pages' script polls to know when to fetch a fresh page."""
    site: Site = request.app.state.site
    guard = site.guard
    known = guard.session_id(request.cookies.get(SESSION_COOKIE)) is not None or guard.token_ok(
        guard.bearer(request.headers.get("authorization"))
    )
    body: dict[str, Any] = {"ok": True}
    if known or guard.token is None:
        try:
            cached = site.fresh_stamp()
            body["stamp"] = cached if cached is not None else await run_in_threadpool(site.stamp)
        except IccError as exc:
            return JSONResponse({"ok": False, "error": " ".join(str(exc).split())}, status_code=503)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


# -- login ---------------------------------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    site: Site = request.app.state.site
    nobody = Visitor(sid=None, bearer=False, csrf="")
    if request.method == "GET":
        return site.render(request, nobody, "login.html", title="Log in", error=None)
    if site.guard.token is None:
        return RedirectResponse("/", status_code=303)
    form = await read_form(request)
    if not site.guard.token_ok(str(form.get("token") or "")):
        await site.guard.wrong_token(remote(request))
        return site.render(request, nobody, "login.html", status=401, title="Log in", error="wrong token")
    site.guard.right_token(remote(request))
    return with_cookie(request, RedirectResponse("/", status_code=303), site.guard.new_session())


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- actions -------------------------------------------------------------------------------------------------------


def _present_job(site: Site, name: str) -> None:
    record = site.store().job(name)
    if record is None or record.removed_at is not None:
        raise LookupError(f"no job named {name!r}")


def run_now(site: Site, form: Any, name: str) -> tuple[str, str]:
    """``icc exec NAME`` in a process of its own (argv, no shell), in the project's directory with
    ``ICC_CONFIG``; a thread waits for it so it leaves no zombie."""

    _present_job(site, name)
    env = dict(os.environ)
    if site.config.path is not None:
        env["ICC_CONFIG"] = str(site.config.path.resolve())
    proc = subprocess.Popen(
        [*framework.icc_argv(site.config.path), "exec", name],
        cwd=site.config.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    threading.Thread(target=proc.wait, name=f"icc exec {name}", daemon=True).start()
    return name, f"icc exec started (pid {proc.pid})"


def set_enabled(site: Site, form: Any, name: str, enabled: bool) -> tuple[str, str]:

    _present_job(site, name)
    store = site.store()
    store.set_enabled(name, enabled)
    if enabled:  # as `icc enable`: the slots that passed while it was disabled are not "missed"
        store.set_next_due({name: NOT_EVALUATED})
    return name, "enabled" if enabled else "disabled"


def pause(site: Site, form: Any) -> tuple[str, str]:

    store = site.store()
    now = time.time()
    before = pauses.current(store, now)
    reason = str(form.get("reason") or "").strip()[:200] or "paused from the dashboard"
    pauses.set_pause(
        store,
        pauses.Pause(since=before.since if before else now, until=None, reason=reason, queues=False),
    )
    return "pause", reason


def resume(site: Site, form: Any) -> tuple[str, str]:

    old = pauses.clear(site.store())
    return "pause", "resumed" if old is not None else "was not paused"


def failed_action(site: Site, form: Any, queue: str, message_id: str, remove: bool) -> tuple[str, str]:
    def work(transport: Any) -> list[int]:
        if message_id == "all":
            ids = [m.id for m in transport.failed_list(queue=queue)]
        elif message_id.isdigit():
            found = transport.failed_get(int(message_id))
            if found is None or found.queue != queue:
                raise LookupError(f"no failed message {message_id} on queue {queue!r}")
            ids = [found.id]
        else:
            raise LookupError(f"no failed message {message_id!r}: give its id, or all")
        if not ids:
            return []
        done: list[int] = transport.failed_remove(ids) if remove else transport.failed_retry(ids)
        return done

    done = site.transport_call(work)
    verb = "removed" if remove else "put back on the queue"
    return f"queue:{queue}:{message_id}", f"{len(done)} {verb}" + (f": {done}" if 0 < len(done) <= 20 else "")
