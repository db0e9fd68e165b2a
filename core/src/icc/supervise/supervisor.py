"""Running one job once, isolated in its own process group, under its job lock, with a time limit.

The supervisor (a process forked from the tick: waited for by the tick for a foreground run, detached for a
background one; ``icc exec`` itself for a manual run) forks the task
into a new session, so a task that raises, calls ``sys.exit`` or ``os._exit``, segfaults or hangs affects only
its own run, and a timeout can kill the task together with every process it started (SIGTERM to the process
group, a grace period, then SIGKILL). Command tasks run as argv lists, never through a shell.

A task can leave its process group (``setsid``, a daemonizing double fork). On Linux the supervisor is a child
subreaper while a run lasts (``prctl(PR_SET_CHILD_SUBREAPER)``): such an escaped descendant is reparented to the
supervisor rather than to pid 1 when its parent exits, so at the end of the run (normal end, timeout or stop) the
supervisor kills and reaps every process that became its child during the run. Elsewhere this is a no-op and
only the task's process group is ended.

User code around the task (``when()``/``skip()``, callbacks, run hooks) runs in the supervisor's children too,
one process each, bounded by ``callback_timeout`` (:func:`run_bounded`). Every process of a run starts in the
project root with ``ICC_CONFIG`` set (:func:`enter_run_context`).

The process side of a run (the supervise loop, the forked task's body, detaching) is
:mod:`icc.supervise.process`, which the light minute's supervisors (:mod:`icc.tick.light`) use too; this
module adds the job lock, the state store, leases, user code around the task and the foreground supervisor.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icc import framework
from icc.errors import StateError
from icc.locks import job_lock, job_lock_name
from icc.records import record
from icc.store.protocol import Outcome, RunRecord, StateStore
from icc.supervise.leases import FENCE_GRACE, Leases
from icc.supervise.process import OutputKeeper as OutputKeeper  # re-exported
from icc.supervise.process import (
    Watch,
    detach,
    exit_forked,
    exit_of,
    kill_group,
    run_child,
    signal_name,
    task_outcome,
    title_setter,
)
from icc.supervise.process import enter_run_context as enter_run_context  # re-exported
from icc.supervise.process import exception_text as exception_text  # re-exported

if TYPE_CHECKING:
    import subprocess

    from icc.jobs import RunResult

OUTPUT_LIMIT = 64 * 1024  # bytes of output stored per run by default: its head and its tail
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
# Seconds to kill and reap what a run left behind: a task that forks without end cannot hold its supervisor.
LEFTOVER_DEADLINE = 5.0


@record
class RunSpec:
    """What the supervisor needs to run a job: no plugin objects but the callable itself."""

    job: str
    run_id: int
    argv: list[str] | None = None
    func: Callable[[], object] | None = None
    timeout: float | None = None
    overlapping: bool = False
    cwd: Path | None = None  # the project root: every process of the run starts there
    config_path: Path | None = None  # the config file in use: ICC_CONFIG of every process of the run
    state_dir: Path | None = None  # where the job lock lives
    # Observers: each returns a line per hook or callback that raised, stored with the run.
    before: Callable[[], list[str]] | None = None
    after: Callable[[RunResult], list[str]] | None = None
    output_limit: int = OUTPUT_LIMIT
    output_to: Path | None = None  # send_output_to / append_output_to, absolute
    output_append: bool = False
    echo: Callable[[bytes], None] | None = None  # icc exec: each chunk of output as it arrives
    start_at: float | None = None  # jitter: a background supervisor sleeps until this epoch time first
    title_suffix: str = ""  # the process titles' tail, e.g. " (slot 03:00)"
    # In the run's supervisor, before anything else: import the plugins, get the task, its callbacks and hooks,
    # evaluate when()/skip(). Returns (outcome, error) when the run must not start (recorded so), else None.
    prepare: Callable[[RunSpec], tuple[Outcome, str] | None] | None = None
    # Output of user code before the task (predicates, before callbacks): stored first.
    preamble: bytearray = field(default_factory=bytearray)
    notices: list[str] = field(default_factory=list)  # for icc run's warnings: plugins that failed to load


@record
class Result:
    outcome: Outcome
    exit_code: int | None = None
    output: str = ""
    error: str | None = None
    duration: float | None = None  # None: the task never started
    pid: int | None = None


def run_result(record: RunRecord) -> RunResult:
    """The :class:`icc.RunResult` of a stored run."""
    from icc.jobs import RunResult  # lazy: the plugins' model; light supervisors do without

    def moment(epoch: float | None) -> datetime | None:
        return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC)

    return RunResult(
        outcome=record.outcome,
        exit_code=record.exit_code,
        error=record.error,
        output=record.output,
        duration=record.duration,
        started_at=moment(record.started_at),
        ended_at=moment(record.ended_at),
    )


def conclude(
    store: StateStore,
    run_id: int,
    after: Callable[[RunResult], list[str]] | None,
    job: str,
    notes: list[str] | None = None,
    *,
    result: RunResult | None = None,
    output: bytearray | None = None,
) -> None:
    """After a run was recorded: hand its result (``result``, or the stored run's) to the observers; store
    (and print) what failed among them, and store what they printed (collected in ``output``)."""
    notes = list(notes or [])
    if after is not None:
        if result is None:
            record = store.run(run_id)
            result = run_result(record) if record is not None else None
        if result is not None:
            notes += after(result)
    if output:
        store.add_output(run_id, output.decode("utf-8", errors="replace"))
    if notes:
        for note in notes:
            with contextlib.suppress(OSError, ValueError):
                print(f"warning: {job} (run {run_id}): {note}", file=sys.stderr, flush=True)
        store.add_note(run_id, "; ".join(notes))


class _Stop:
    """Set by the SIGTERM/SIGINT handler of ``icc run``: start nothing new, stop what runs."""

    requested = False
    signum = signal.SIGTERM
    pgid: int | None = None
    who = "icc run"  # the process that received it, for the run's error
    stop_at = 0.0  # when the running task is stopped (icc work leaves it its grace to finish on its own)
    supervisor: int | None = None  # icc run: the foreground run's supervisor, which gets the signal passed on
    signalled: int | None = None  # the task's process group the handler sent SIGTERM to (the loop sends none)


STOP = _Stop()


def stop_requested() -> bool:
    """Read at each step (a function, so the signal handler's change is never assumed away)."""
    return STOP.requested


def sleep_until(moment: float) -> bool:
    """Sleep until the epoch time *moment*, waking early for a stop request; True when *moment* was reached."""
    while not stop_requested():
        left = moment - time.time()
        if left <= 0:
            return True
        time.sleep(min(left, 0.2))
    return False


def install_stop_handlers(patience: float = 0.0) -> None:
    """SIGTERM/SIGINT: start nothing new; stop the running task ``patience`` seconds later (at once on a
    second signal): SIGTERM to its process group, SIGKILL after the grace."""

    def handler(signum: int, _frame: object) -> None:
        now = time.time()
        STOP.stop_at = now + patience if not STOP.requested else now
        STOP.requested = True
        STOP.signum = signal.Signals(signum)
        if STOP.pgid is not None and now >= STOP.stop_at:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(STOP.pgid, signal.SIGTERM)
            STOP.signalled = STOP.pgid
        if STOP.supervisor is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(STOP.supervisor, signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_environment(config_path: Path | None) -> dict[str, str] | None:
    """The environment of a command task: icc's own, with ``ICC_CONFIG`` (None: icc's own as it is)."""
    if config_path is None:
        return None
    return {**os.environ, "ICC_CONFIG": str(config_path)}


def _in_user_code(func: Callable[[], object]) -> Callable[[], object]:
    """``func`` called inside the installed framework's context (an app context; stale connections closed)."""

    def call() -> object:
        with framework.user_code():
            return func()

    return call


def _enter_task(spec: RunSpec) -> None:
    """In the forked task, first: the run's context and the task's process title."""
    enter_run_context(spec.cwd, spec.config_path)
    set_title(f"icc: job {spec.job}{spec.title_suffix}")


def set_title(title: str) -> None:
    """Name this (forked) process in ps/top, when setproctitle is installed (loaded only here, without
    :mod:`logging`: :func:`icc.supervise.process.title_setter`; the tick loads it before it forks: preload())."""
    setter = title_setter()
    if setter is not None:
        with contextlib.suppress(Exception):
            setter(title)


def _start(
    spec: RunSpec, close_fds: list[int]
) -> tuple[int, int, subprocess.Popen[bytes] | None, int | None]:
    """Start the task; returns (pid, read end of its output pipe, Popen for commands, read end of the pipe
    a callable's exception text comes on)."""
    if spec.argv is not None:
        import subprocess  # lazy: command tasks only (its import, with locale's, is a due tick's time)

        proc = subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=spec.cwd,
            env=run_environment(spec.config_path),
            close_fds=True,
        )
        assert proc.stdout is not None
        return proc.pid, proc.stdout.fileno(), proc, None
    assert spec.func is not None
    read_fd, write_fd = os.pipe()
    error_r, error_w = os.pipe()
    os.set_blocking(error_r, False)  # read once the task is gone; a daemonized grandchild may hold it open
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        os.close(read_fd)
        os.close(error_r)
        run_child(_in_user_code(spec.func), write_fd, close_fds, error_w, enter=lambda: _enter_task(spec))
    os.close(write_fd)
    os.close(error_w)
    return pid, read_fd, None, error_r


def _read_error_text(fd: int | None) -> str | None:
    """What a callable task wrote on its error pipe before it exited (its exception's text), if anything."""
    if fd is None:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:  # nothing written (EAGAIN)
        data = b""
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace").strip() or None


def set_child_subreaper(on: bool) -> bool:
    """Linux: make this process a child subreaper (or stop being one); False where that is not possible.

    A subreaper adopts its orphaned descendants instead of pid 1, so a task that daemonizes cannot escape its
    supervisor. Only :func:`supervise` sets it, for the length of one run, and turns it off again: it is never
    on while :func:`start_detached` forks, so the tick never adopts the background supervisors it orphans on
    purpose (and a forked child does not inherit it, so they don't either).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(_libc().prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


class _Process:
    """What a process knows of itself: the C library (ctypes, loaded once: :func:`start_detached` loads it
    before it forks, so twenty supervisors do not each pay for importing ctypes), and whether it is a fresh
    detached supervisor, which has no child yet (no /proc scan needed to know which children were there)."""

    libc: Any = None
    childless = False


def preload() -> None:
    """In the tick, once, before it forks the supervisors of its runs: import what each of them would import
    for itself (setproctitle for the titles; the plugin host, :mod:`icc.plugins`, with pluggy and
    :mod:`icc.jobs`, which every plugin's ``@icc.hookimpl`` needs anyway), so a hundred supervisors do not
    each pay for it. Library code only: no plugin is imported, and the tick still runs no user code."""
    title_setter()  # setproctitle's, for the titles
    from icc.jobs import RunContext  # noqa: F401  # lazy: as above (every run's context)
    from icc.plugins import prepare_manager  # lazy: as above; the idle paths never import the plugin host

    prepare_manager()  # pluggy's manager with icc's hook specifications, taken by each supervisor


def _libc() -> Any:
    if _Process.libc is None:
        import ctypes  # lazy: only on Linux, for prctl; loaded once before the forks

        _Process.libc = ctypes.CDLL(None, use_errno=True)
    return _Process.libc


def _children() -> set[int]:
    """This process's children (zombies too), from /proc (where the ``children`` files may not exist)."""
    me = os.getpid()
    found: set[int] = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                data = stat.read()
        except OSError:
            continue  # gone meanwhile
        fields = data.rpartition(b")")[2].split()  # the command name in (...) may hold spaces and ')'
        if len(fields) > 1 and fields[1] == str(me).encode():
            found.add(int(name))
    return found


def _has_children() -> bool:
    """Whether this process has a child (running or a zombie), without reaping it (``WNOWAIT``) and without
    reading /proc: after its task is reaped, a supervisor that has none left has nothing to kill."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except (OSError, AttributeError):
        return True  # cannot tell: look in /proc
    return True


def _end_leftovers(before: set[int]) -> None:
    """Kill and reap every process that became this subreaper's child during the run, until none is left.

    Only direct children are killed: their pids cannot be reused until they are reaped, so nothing else is
    ever hit. Killing one hands its own children to this process, and the next round takes them.
    """
    deadline = time.monotonic() + LEFTOVER_DEADLINE
    while (left := _children() - before) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in left:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if _children() & left:
            time.sleep(0.01)


def supervise(
    store: StateStore, spec: RunSpec, *, grace: float = 10.0, leases: Leases | None = None
) -> Result:
    """Run ``spec`` to its end, record it, then hand its result to ``spec.after``. The run row must exist.

    On a store with leases the run's lease is renewed meanwhile (by ``leases``, or by a renewer of its own),
    and the task is stopped when the lease is lost (see :mod:`icc.supervise.leases`)."""
    notes: list[str] = []
    own = leases is None and store.lease is not None
    if own:
        leases = Leases(store)
    if leases is not None:
        leases.hold(spec.run_id)
    try:
        verdict = spec.prepare(spec) if spec.prepare is not None else None
        if verdict is not None:  # not started: the plugin did not load, or a when/skip condition said no
            outcome, why = verdict
            store.finish(spec.run_id, outcome, now=time.time(), output=_preamble(spec), error=why)
            result = Result(outcome, error=why)
        else:
            result = _supervise(store, spec, grace, notes, leases)
    finally:
        if leases is not None:
            leases.release(spec.run_id)
            if own:
                leases.stop()
    spec.preamble.clear()  # what the after callbacks print is collected here, once the run is recorded
    conclude(store, spec.run_id, spec.after, spec.job, notes, output=spec.preamble)
    return result


def _preamble(spec: RunSpec) -> str:
    return spec.preamble.decode("utf-8", errors="replace")


def _supervise(
    store: StateStore, spec: RunSpec, grace: float, notes: list[str], leases: Leases | None = None
) -> Result:
    lock = None
    if not spec.overlapping and spec.state_dir is not None:
        try:
            lock = job_lock(spec.state_dir, spec.job)
            acquired = lock.try_acquire()
        except StateError as exc:  # a broken lock file fails this run only, never the whole tick
            store.finish(spec.run_id, "failed", now=time.time(), error=str(exc))
            return Result("failed", error=str(exc))
        if not acquired:
            holder = lock.holder()
            since = ""
            if holder is not None:
                from icc import logs  # lazy: only to describe a held job lock's holder

                since = f" ({holder.describe(logs.zone())})"
            error = f"skipped: the previous run is still running{since}"
            store.finish(spec.run_id, "skipped", now=time.time(), error=error)
            return Result("skipped", error=error)
    try:
        if lock is not None:
            # Across hosts sharing the store: the one running exclusive run of the job, by a unique index.
            elsewhere = store.take_exclusive(spec.run_id, pid=os.getpid())
            if elsewhere is not None:
                error = f"skipped: the previous run is still running on {elsewhere}"
                store.finish(spec.run_id, "skipped", now=time.time(), error=error)
                return Result("skipped", error=error)
        fds = [lock.fd] if lock and lock.fd is not None else []
        return _supervise_locked(store, spec, grace, fds, notes, leases)
    finally:
        if lock is not None:
            lock.release()


def _open_output_file(spec: RunSpec, notes: list[str]) -> int | None:
    """The run's output file (send_output_to / append_output_to), created 0600; None (and a note) when it
    cannot be opened: the run goes on, its output is still stored. The open never blocks (a FIFO) and never
    follows another user's link (:func:`icc.statedir.open_output_file`); an unsafe path was refused before
    the run started (:func:`icc.tick.coordinator.set_output_file`)."""
    if spec.output_to is None:
        return None
    from icc.statedir import open_output_file  # lazy: only a run with send_output_to / append_output_to

    try:
        return open_output_file(spec.output_to, spec.output_append)
    except OSError as exc:
        notes.append(f"could not open its output file {spec.output_to}: {exc.strerror or exc}")
    except StateError as exc:
        notes.append(f"could not open its output file: {exc}")
    return None


LOOK_EVERY = 0.05  # seconds between two looks at a stop request and at the run's lease while a task runs


def _supervise_locked(
    store: StateStore,
    spec: RunSpec,
    grace: float,
    close_fds: list[int],
    notes: list[str],
    leases: Leases | None = None,
) -> Result:
    """Under the job lock: start the task, watch it to its end (:class:`icc.supervise.process.Watch`), end
    what it left behind, record the run."""
    refused = _refuse_start(store, spec, leases)
    if refused is not None:
        return refused
    if spec.before is not None:
        notes += spec.before()
    started = time.time()
    subreaper = set_child_subreaper(True)
    # A fresh supervisor has no child yet, nor has a process without children: no /proc scan to know them.
    before = _children() if subreaper and not _Process.childless and _has_children() else set()
    try:
        pid, read_fd, proc, error_fd = _start(spec, close_fds)
    except OSError as exc:
        if subreaper:
            set_child_subreaper(False)
        why = f"could not start {spec.argv!r}: {exc.strerror or exc}"
        store.finish(spec.run_id, "failed", now=time.time(), error=why)
        return Result("failed", error=why)
    marked = _mark_running(store, spec.run_id, task_pid=pid, now=started, leases=leases)
    STOP.pgid = pid
    output = _RunOutput(spec, notes)
    deadline = started + spec.timeout if spec.timeout else None
    watch = Watch(pid, read_fd, output.take, deadline=deadline, grace=grace)
    stopping = _Stopping(spec.run_id, grace, leases)
    try:
        status = watch.run(stopping.check, every=LOOK_EVERY)
    finally:
        STOP.pgid = None
        output.close()
        _close_task_output(proc, read_fd)
        _end_task(pid, subreaper, before)
    ended = time.time()
    if (problem := marked(stopping.fenced is not None)) is not None and stopping.fenced is None:
        notes.append(f"could not record that its task started: {problem}")
    raised = _read_error_text(error_fd)
    outcome, exit_code, error = _outcome(spec, watch, stopping, status, ended, raised)
    output_text = output.kept.text()
    if stopping.fenced is not None and leases is not None:
        _finish_fenced(
            store, spec.run_id, leases.lease, now=ended, exit_code=exit_code, output=output_text, error=error
        )
    else:
        store.finish(spec.run_id, outcome, now=ended, exit_code=exit_code, output=output_text, error=error)
    return Result(outcome, exit_code, output_text, error, ended - started, pid)


def _refuse_start(store: StateStore, spec: RunSpec, leases: Leases | None) -> Result | None:
    """A run that must not start (a stop was requested, its lease is lost), recorded ``skipped``; else None."""
    if stop_requested():
        why = f"not started: {STOP.who} received {signal_name(STOP.signum)}"
    elif leases is not None and (lost := leases.lost(spec.run_id)) is not None:
        why = f"not started: {lost}"
    else:
        return None
    store.finish(spec.run_id, "skipped", now=time.time(), error=why)
    return Result("skipped", error=why)


class _RunOutput:
    """Where a running task's output goes: kept for the store (after what user code printed before the task),
    echoed as it arrives (``icc exec``), and written to the run's output file."""

    def __init__(self, spec: RunSpec, notes: list[str]) -> None:
        self.spec = spec
        self.notes = notes
        self.kept = OutputKeeper(spec.output_limit)
        if spec.preamble:
            self.kept.add(bytes(spec.preamble))
        self.fd = _open_output_file(spec, notes)

    def take(self, chunk: bytes) -> None:
        self.kept.add(chunk)
        if self.spec.echo is not None:
            with contextlib.suppress(OSError, ValueError):
                self.spec.echo(chunk)
        if self.fd is not None:
            try:
                os.write(self.fd, chunk)
            except OSError as exc:
                self.notes.append(
                    f"could not write its output file {self.spec.output_to}: {exc.strerror or exc}"
                )
                self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Stopping:
    """What stops a running task besides its time limit: a stop request (once icc work's patience is over) and,
    on a store with leases, a lost lease (fencing)."""

    def __init__(self, run_id: int, grace: float, leases: Leases | None) -> None:
        self.run_id = run_id
        self.grace = grace
        self.leases = leases
        self.sent_at: float | None = None  # when the stop request was passed on to the task
        self.fenced: str | None = None  # why the run's lease was lost: its task was stopped

    def check(self, watch: Watch, now: float) -> None:
        if stop_requested() and self.sent_at is None and now >= STOP.stop_at:
            self.sent_at = now
            # Once only: a second SIGTERM could end a task inside its own handler, before it says how it
            # stopped (a consumer's summary line).
            watch.stop(now, self.grace, send=STOP.signalled != watch.pid)
        if self.leases is not None and self.fenced is None:
            self.fenced = self.leases.lost(self.run_id)
            if self.fenced is not None:
                # Fencing: the task must be gone before the lease can pass and another host may run the job.
                watch.stop(now, min(self.grace, self.leases.lease * FENCE_GRACE))


def _close_task_output(proc: subprocess.Popen[bytes] | None, read_fd: int) -> None:
    if proc is not None:
        proc.returncode = 0  # reaped by the watch; keep Popen from waiting again
        assert proc.stdout is not None
        proc.stdout.close()
    else:
        os.close(read_fd)


def _end_task(pid: int, subreaper: bool, before: set[int]) -> None:
    """Whatever the task left in its process group goes with it, and so does every process it started that
    left the group (setsid, double fork): as a subreaper, this process has adopted them."""
    kill_group(pid, signal.SIGKILL)
    if subreaper:
        if _has_children():  # only then is there something to find in /proc
            _end_leftovers(before)
        set_child_subreaper(False)


def _outcome(
    spec: RunSpec, watch: Watch, stopping: _Stopping, status: int, ended: float, raised: str | None
) -> tuple[Outcome, int, str | None]:
    """The run's outcome, exit code and error; a lost lease first, whatever else happened."""
    if stopping.fenced is not None:
        why = f"stopped: it lost its lease on the run, so its task was stopped ({stopping.fenced})"
        return "stopped", exit_of(status)[0], why
    stopped = None
    # The handler may have killed it first; one that ended on its own within icc work's patience was not stopped.
    if stopping.sent_at is not None or (stop_requested() and STOP.stop_at <= ended):
        stopped = f"stopped: {STOP.who} received {signal_name(STOP.signum)}"
    return task_outcome(
        status, timed_out=watch.timed_out, timeout=spec.timeout, stopped=stopped, raised=raised
    )


def run_in_supervisor(
    spec: RunSpec, open_store: Callable[[], StateStore], *, grace: float
) -> tuple[int, Result | None, list[str]]:
    """Run ``spec`` in a supervisor process forked from the caller (the tick), and wait for it to exit
    (``waitpid``, no polling); returns its exit code, the run's result as it told (None when it did not) and its
    ``spec.notices``. The supervisor records the run's outcome; the result also reaches a tick whose store
    was lost meanwhile, to say what ran.

    The caller must hold no SQLite connection (one must never cross a fork). The supervisor stays in the
    caller's process group; a stop request to the caller is passed on to it (:data:`STOP`)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            _libc()  # once, in the tick, rather than in each supervisor
    parent = os.getpid()
    notices_r, notices_w = os.pipe()
    # icc work stops on SIGHUP as on SIGTERM, and passes it on; its at-fork hook gives forked processes the
    # default SIGHUP back (tasks, as from cron), so the supervisor takes the tick's handler back here.
    hup = signal.getsignal(signal.SIGHUP)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns
        os.close(notices_r)
        _foreground_supervisor(spec, open_store, grace, parent, hup, notices_w)
    os.close(notices_w)
    STOP.supervisor = pid
    try:
        _pid, status = os.waitpid(pid, 0)
    finally:
        STOP.supervisor = None
    code = os.waitstatus_to_exitcode(status)
    heard = _told(notices_r)
    if heard is None:
        return code, None, []
    result = Result(heard["outcome"], error=heard["error"], duration=heard["duration"])
    return code, result, [str(n) for n in heard["notices"]]


def _foreground_supervisor(
    spec: RunSpec,
    open_store: Callable[[], StateStore],
    grace: float,
    parent: int,
    hup: Any,
    notices_w: int,
) -> None:
    """In the foreground run's supervisor: supervise the run, tell the tick its result on ``notices_w``, exit
    (1 when the store failed or something unexpected happened). Never returns."""
    code = 0
    try:
        if callable(hup):
            signal.signal(signal.SIGHUP, hup)
        # Part of the tick: a tick killed with SIGKILL takes its foreground supervisor with it, as when the
        # tick supervised the run itself (the next tick records the run abandoned and ends its task).
        _die_with_parent(parent)
        # A process group of its own: a stop signal reaches it once, passed on by the tick (STOP.supervisor),
        # not a second time from a terminal's Ctrl-C to the tick's group (a second signal means "now").
        os.setpgid(0, 0)
        _Process.childless = True  # forked just now: its first child is what it starts
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)  # icc run's stdout is its table or JSON: nothing of a run goes there
        os.close(devnull)
        set_title(f"icc: supervise {spec.job}{spec.title_suffix}")
        store = open_store()
        result = supervise(store, spec, grace=grace)
        store.close()
        told: dict[str, Any] = {
            "outcome": result.outcome,
            "error": result.error,
            "duration": result.duration,
            "notices": spec.notices[:100],
        }
        os.set_blocking(notices_w, False)  # never held by a tick that does not read yet
        with contextlib.suppress(OSError):
            os.write(notices_w, json.dumps(told).encode())
    except StateError as exc:  # the store failed (a full disk): one line, or none when the tick tells it
        if not getattr(exc, "journaled", False):
            with contextlib.suppress(Exception):
                print(f"error: the supervisor of {spec.job} (run {spec.run_id}): {exc}", file=sys.stderr)
        code = 1
    except BaseException:
        import traceback  # lazy: only a supervisor that failed unexpectedly (1-2 ms of every due tick)

        with contextlib.suppress(Exception):
            traceback.print_exc()
        code = 1
    finally:
        exit_forked(code)


def _told(notices_r: int) -> dict[str, Any] | None:
    """What the foreground supervisor told on its pipe (then closed): its run's result and notices."""
    os.set_blocking(notices_r, False)
    heard: Any = None
    try:
        heard = json.loads(os.read(notices_r, 65536) or b"null")
    except (OSError, ValueError):
        pass
    finally:
        os.close(notices_r)
    return heard if isinstance(heard, dict) else None


def spawn_detached(work: Callable[[], object]) -> None:
    """Run ``work()`` in a detached process (double fork, a session of its own, no stdio), and return at once.
    The caller must hold no SQLite connection. Used for the tick's concluder: nothing it does holds the tick."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns
        try:
            os.setsid()
            if os.fork() == 0:
                try:
                    devnull = os.open(os.devnull, os.O_RDWR)
                    for fd in (0, 1, 2):
                        os.dup2(devnull, fd)
                    os.close(devnull)
                    for sig in (signal.SIGTERM, signal.SIGINT):
                        signal.signal(sig, signal.SIG_DFL)
                    work()
                finally:
                    exit_forked(0)
        finally:
            exit_forked(0)
    os.waitpid(pid, 0)  # the intermediate exits as soon as it has forked


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when its parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


@record
class Bounded:
    """What became of one piece of user code run by :func:`run_bounded`."""

    value: object = None  # what it returned (predicates: whether it said yes)
    note: str | None = None  # why it did not return: it raised, exited or was killed at its limit


def run_bounded(
    label: str,
    fn: Callable[[], object],
    *,
    limit: float,
    output: bytearray,
    cwd: Path | None = None,
    config_path: Path | None = None,
    title: str = "",
) -> Bounded:
    """Run ``fn()`` in a forked child of its own session, in the run's context, for at most ``limit`` seconds.

    Its stdout and stderr are appended to ``output`` (under a line naming ``label``); a child still running at
    its limit is killed with its process group. A child that raises, exits or is killed only makes a note: this
    process (the run's supervisor) goes on. The returned value is a boolean's truth for predicates, else None."""
    read_fd, write_fd = os.pipe()
    value_r, value_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns
        os.close(read_fd)
        os.close(value_r)
        _bounded_child(fn, write_fd, value_w, cwd, config_path, title)
    os.close(write_fd)
    os.close(value_w)
    deadline = time.monotonic() + limit
    chunks = bytearray()
    timed_out = not _read_until_exit(pid, read_fd, chunks, deadline)
    status = _wait_until(pid, deadline) if not timed_out else None
    if status is None:
        timed_out = True
    kill_group(pid, signal.SIGKILL)  # at its limit, or what it left running in its session
    if status is None:
        _pid, status = os.waitpid(pid, 0)
    if not timed_out:  # collect what is still buffered, without waiting for grandchildren holding the pipe
        _read_buffered(read_fd, chunks)
    os.close(read_fd)
    os.set_blocking(value_r, False)
    try:
        answer = os.read(value_r, 4096)
    except OSError:
        answer = b""
    os.close(value_r)
    if chunks:
        output += f"--- {label} printed: ---\n".encode()
        output += chunks if chunks.endswith(b"\n") else chunks + b"\n"
    return _bounded_verdict(label, limit, timed_out, answer, status)


def _bounded_child(
    fn: Callable[[], object],
    write_fd: int,
    value_w: int,
    cwd: Path | None,
    config_path: Path | None,
    title: str,
) -> None:
    """In :func:`run_bounded`'s child (:func:`icc.supervise.process.run_child`): call ``fn`` in the run's
    context and tell on ``value_w`` what it answered (``1``/``0``), or how it exited (``X``) or failed
    (``E``). Never returns."""

    def enter() -> None:
        from icc import logs  # lazy: loaded already in a supervisor (the tick configured it)

        logs.keep_stderr()  # icc's own warnings (failing pings) still reach the tick's stderr
        enter_run_context(cwd, config_path)
        if title:
            set_title(title)

    def answer() -> None:
        try:
            with framework.user_code():  # a framework's app context; its stale connections closed
                value = fn()
        except SystemExit as exc:
            if exc.code is None or exc.code == 0:
                os.write(value_w, b"0")
                raise
            code = exc.code & 0xFF or 1 if isinstance(exc.code, int) else 1
            os.write(value_w, b"X" + f"exited with code {code}".encode())
            raise SystemExit(code) from None
        except BaseException as exc:
            os.write(value_w, b"E" + exception_text(exc).encode("utf-8", errors="replace")[:4000])
            raise
        os.write(value_w, b"1" if value else b"0")

    run_child(answer, write_fd, (), enter=enter)


def _read_until_exit(pid: int, read_fd: int, chunks: bytearray, deadline: float) -> bool:
    """Read the child's output into ``chunks`` until it closes or the child exits (its pidfd: a process it
    started in the background may hold the pipe open); False when ``deadline`` (monotonic) came first."""
    pidfd: int | None = None
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(read_fd, selectors.EVENT_READ)
            with contextlib.suppress(OSError, AttributeError):
                pidfd = os.pidfd_open(pid)
                sel.register(pidfd, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                for key, _ in sel.select(timeout=left):
                    if key.fd != read_fd:
                        return True  # it exited; what it wrote is drained by the caller
                    chunk = os.read(read_fd, 65536)
                    if not chunk:
                        return True
                    chunks += chunk
            return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _read_buffered(read_fd: int, chunks: bytearray) -> None:
    """Add to ``chunks`` what is buffered in the pipe now, without waiting for more."""
    with selectors.DefaultSelector() as sel:
        sel.register(read_fd, selectors.EVENT_READ)
        while sel.select(timeout=0):
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks += chunk


def _bounded_verdict(label: str, limit: float, timed_out: bool, answer: bytes, status: int) -> Bounded:
    """What became of the user code, from whether it was killed at its limit, what it told and its exit."""
    if timed_out:
        return Bounded(note=f"{label} was killed at its time limit of {limit:g}s (callback_timeout)")
    if answer[:1] == b"E":
        return Bounded(note=f"{label} failed: {answer[1:].decode('utf-8', errors='replace')}")
    if answer[:1] == b"X":
        return Bounded(note=f"{label} {answer[1:].decode('utf-8', errors='replace')}")
    if answer[:1] in (b"0", b"1"):
        return Bounded(value=answer == b"1")
    if os.WIFSIGNALED(status):
        return Bounded(note=f"{label} was killed by {signal_name(os.WTERMSIG(status))}")
    return Bounded(note=f"{label} exited with code {os.waitstatus_to_exitcode(status)}")


def _wait_until(pid: int, deadline: float) -> int | None:
    """Wait for child ``pid`` until ``deadline`` (monotonic); its wait status, or None when it still runs.
    Blocks on a pidfd where there is one (Linux); else looks every 10 ms."""
    fd: int | None = None
    with contextlib.suppress(OSError, AttributeError):
        fd = os.pidfd_open(pid)
    try:
        while True:
            waited, status = os.waitpid(pid, os.WNOHANG)
            if waited == pid:
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if fd is not None:
                with selectors.DefaultSelector() as sel:
                    sel.register(fd, selectors.EVENT_READ)
                    sel.select(timeout=left)
            else:
                time.sleep(min(left, 0.01))
    finally:
        if fd is not None:
            os.close(fd)


FENCED_PATIENCE = 1.0  # seconds a fenced supervisor waits for its 'running' record before it writes 'stopped'


def _mark_running(
    store: StateStore, run_id: int, *, task_pid: int, now: float, leases: Leases | None
) -> Callable[[bool], str | None]:
    """Record that the run's task started; returns a call that waits for that record and says what went wrong.

    On a store with leases the record is written by a thread of its own, so that the supervisor watches the
    lease from the task's first moment: a database that stops answering while the record is on its way (a cut
    network can hold a statement for good) must not keep the supervisor from fencing its task. Once fenced,
    the supervisor waits for that record only briefly: the fenced outcome is written on a new connection, and
    closing the old one ends the wait of the thread still blocked on it."""
    if leases is None:
        store.mark_running(run_id, pid=os.getpid(), task_pid=task_pid, now=now)
        return lambda _fenced: None
    failed: list[str] = []

    def mark() -> None:
        try:
            store.mark_running(run_id, pid=os.getpid(), task_pid=task_pid, now=now)
        except Exception as exc:  # reported with the run; the lease decides whether the task may go on
            failed.append(str(exc))

    thread = threading.Thread(target=mark, name="icc-mark-running", daemon=True)
    thread.start()

    def done(fenced: bool) -> str | None:
        # Before the store is used again (a connection is not shared between threads), unless fenced.
        thread.join(FENCED_PATIENCE if fenced else None)
        if thread.is_alive():
            return "the database did not answer"
        return failed[0] if failed else None

    return done


def _finish_fenced(
    store: StateStore,
    run_id: int,
    lease: float,
    *,
    now: float,
    exit_code: int | None,
    output: str,
    error: str | None,
) -> None:
    """Record a run whose lease was lost as ``stopped``, on a new connection (the old one may hang for good),
    trying again for ``max(60 s, 3 leases)``. The store writes it only while no other host recorded the run
    (abandoned): what another host recorded stays. Past the deadline nothing is written by this host."""
    deadline = time.monotonic() + max(60.0, 3 * lease)
    while True:
        store.reconnect()
        try:
            store.finish(run_id, "stopped", now=now, exit_code=exit_code, output=output, error=error)
            return
        except StateError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)


@record
class Detached:
    """What became of one background run handed to :func:`start_detached`."""

    pid: int | None = None  # its supervisor's pid: the run is running
    error: str | None = None  # why not
    leave: bool = False  # record nothing: its supervisor may still start it


def start_detached(
    specs: list[RunSpec],
    open_store: Callable[[], StateStore],
    *,
    grace: float,
    report_timeout: float = 10.0,
    prepare: Callable[[], object] | None = None,
) -> list[Detached]:
    """Start one detached supervisor per spec; return each one's pid, or why it did not start.

    The caller must hold no SQLite connection: each supervisor is forked from it (so what it imported is not
    imported again) and opens its own connection; a connection must never cross a fork. Every supervisor is
    forked by one intermediate process in a session apart from the tick's (no zombie, not in its process group)
    and reports its pid on a pipe before it touches the state store (:func:`icc.supervise.process.detach`),
    then supervises its run like a foreground one (job lock, time limit, recording). No supervisor writes before its task starts, so
    twenty of them don't queue on the database's write lock before their tasks run.

    ``prepare()`` runs in the intermediate before it forks them (:func:`icc.supervise.process.detach`): the
    tick loads the runs' plugins and builds their jobs there once, for all of them
    (:func:`icc.tick.coordinator.preload_runs`). When the intermediate
    died in it (a plugin's import that crashes the process) so that no supervisor reported, the supervisors
    are started again without it, each loading for itself and recording what went wrong with its own run.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            _libc()  # once, here, rather than in each supervisor
    for spec in specs:
        if not spec.overlapping:
            job_lock_name(spec.job)  # its pattern compiled once (re caches it), not in each supervisor
            break

    def target(spec: RunSpec) -> Callable[[], None]:
        return lambda: _detached_supervisor(spec, open_store, grace)

    targets = [target(spec) for spec in specs]
    pids = detach(targets, report_timeout, prepare)
    if prepare is not None and pids and all(pid == 0 for pid in pids):
        pids = detach(targets, report_timeout)  # the intermediate died preparing: without it
    results: list[Detached] = []
    for pid in pids:
        if pid:
            results.append(Detached(pid=pid))
        elif pid == 0:
            results.append(Detached(error="its supervisor exited before starting the run"))
        else:
            # Leave the run alone: its supervisor may still start it; if not, the next tick abandons it.
            results.append(
                Detached(error=f"its supervisor did not report within {report_timeout:g}s", leave=True)
            )
    return results


def _detached_supervisor(spec: RunSpec, open_store: Callable[[], StateStore], grace: float) -> None:
    """In the detached supervisor (its pid reported, its stdio on /dev/null): supervise the run."""
    _Process.childless = True  # forked just now: its first child is its run's task
    set_title(f"icc: supervise {spec.job}{spec.title_suffix}")
    STOP.requested, STOP.pgid, STOP.who = False, None, "its background supervisor"
    install_stop_handlers()
    store = open_store()
    leases = Leases(store) if store.lease is not None else None
    if spec.start_at is not None:
        if leases is not None:
            leases.hold(spec.run_id)  # its claim's lease is kept while it waits
        sleep_until(spec.start_at)  # jitter; a stop request meanwhile makes the run skipped, below
    supervise(store, spec, grace=grace, leases=leases)
    if leases is not None:
        leases.stop()
    store.close()
