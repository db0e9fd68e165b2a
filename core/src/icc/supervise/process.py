"""The process side of supervising one run, said once for every supervisor: the full tick's foreground and
background runs and ``icc exec`` (:mod:`icc.supervise.supervisor`) and the light minute's consumer, plain
and background runs (:mod:`icc.tick.light`, :mod:`icc.tick.plain`, :mod:`icc.tick.background`).

- :func:`detach`: start detached supervisors (one intermediate, in a session apart, forks them all), each
  reporting its pid.
- :func:`run_child`: the body of a forked task: a session of its own, its output to its supervisor's pipe,
  its exit code from what the callable did.
- :class:`Watch`: the supervise loop: read the task's output, keep its time limit (SIGTERM to its process
  group, SIGKILL after the grace), pass a stop on, notice its exit (a pidfd where there is one).
- :func:`watch_all`: the same loop over several tasks at once, one ``select`` for all of them (the light
  minute's background supervisor, :mod:`icc.tick.background`).
- :func:`task_outcome`: the run's outcome, exit code and error from how its task ended.
- :class:`OutputKeeper`: what is stored of a run's output.

Stdlib only (``os``, ``signal``, ``selectors``, ``time``), and none of the state store: the light minute's
supervisors use it without loading what the full tick loads. Recording stays with the callers.
"""

from __future__ import annotations

import atexit
import os
import selectors
import signal
import sys
import time
from collections import deque

TYPE_CHECKING = False  # not typing's: the light minute does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import NoReturn

    from icc.store.protocol import Outcome

ERROR_TEXT_LIMIT = (
    1000  # characters of an exception's text kept as the run's error (all of it is in the output)
)
DRAIN_WAIT = 0.05  # seconds to wait for more output once the task exited (a grandchild may hold the pipe)
# Where there is no pidfd: seconds between two looks at the task's exit while its output is open (a process it
# started may hold the output open after it exited), and once the output is closed.
NO_PIDFD_LOOK = 1.0
NO_PIDFD_WAIT = 0.02
KILL_SENT = 3600.0  # after SIGKILL: wait for the exit, send nothing more


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def kill_group(pgid: int, sig: int) -> None:
    try:  # noqa: SIM105 (contextlib is not imported on the light minute's path)
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class OutputKeeper:
    """What is stored of a run's output: the whole of it up to ``limit`` bytes; past that, its first and its
    last ``limit // 2`` bytes with a line saying how much was left out between them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_size = 0
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        half = self.limit // 2
        if len(self.head) < half:
            room = half - len(self.head)
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail.append(chunk)
        self.tail_size += len(chunk)
        while self.tail and self.tail_size - len(self.tail[0]) >= self.limit - half:
            self.tail_size -= len(self.tail.popleft())

    def text(self) -> str:
        if self.limit <= 0:
            return ""
        tail = b"".join(self.tail)
        if self.total <= self.limit:  # nothing was dropped
            return (bytes(self.head) + tail).decode("utf-8", errors="replace")
        kept_tail = tail[-(self.limit - len(self.head)) :]
        left_out = self.total - len(self.head) - len(kept_tail)
        return (
            bytes(self.head).decode("utf-8", errors="replace")
            + f"\n[... {left_out} bytes of output left out ...]\n"
            + kept_tail.decode("utf-8", errors="replace")
        )


def exception_text(exc: BaseException) -> str:
    """``"ExceptionType: message"`` on one line, as a run's error; the traceback stays in its output."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 3] + "..."


def enter_run_context(cwd: str | os.PathLike[str] | None, config_path: str | os.PathLike[str] | None) -> None:
    """In a forked process of a run (task, callback, hook, predicate): start in the project root with
    ``ICC_CONFIG`` naming the config file in use, so ``icc.dispatch()`` finds the project's queues whatever
    directory the tick was started from (cron starts it in ``/`` or ``$HOME``)."""
    if cwd is not None:
        try:  # noqa: SIM105 (contextlib is not imported on the light minute's path)
            os.chdir(cwd)
        except OSError:  # a root that went away: the task says what it misses
            pass
    if config_path is not None:
        os.environ["ICC_CONFIG"] = os.fspath(config_path)


def exit_code(exc: SystemExit) -> int:
    """The exit code of a process that ended with ``exc``, as Python's own exit would make it (a message is
    printed on stderr and exits 1)."""
    if exc.code is None or exc.code == 0:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF or 1
    print(exc.code, file=sys.stderr)
    return 1


class _Title:
    """setproctitle's C function, once looked for (``loaded``; None when it is not installed)."""

    loaded = False
    setter: Callable[[str], None] | None = None


def title_setter() -> Callable[[str], None] | None:
    """``setproctitle.setproctitle`` when setproctitle is installed, else None, loaded once.

    Its C extension (``setproctitle._setproctitle``) is loaded without the package's ``__init__``, which
    imports :mod:`logging` (about 4 ms, for a debug line when the extension is missing): the due tick and
    every supervisor would pay for it. A later ``import setproctitle`` finds the extension loaded."""
    if not _Title.loaded:
        _Title.setter = _load_title_setter()
        _Title.loaded = True
    return _Title.setter


def _load_title_setter() -> Callable[[str], None] | None:
    name = "setproctitle._setproctitle"
    module = sys.modules.get(name)
    if module is None:
        from importlib.machinery import (  # lazy: only forked processes have a title to set
            EXTENSION_SUFFIXES,
            ExtensionFileLoader,
            ModuleSpec,
            PathFinder,
        )

        try:
            package = PathFinder.find_spec("setproctitle")
        except (ImportError, ValueError):
            return None
        for folder in (package.submodule_search_locations or []) if package is not None else []:
            for suffix in EXTENSION_SUFFIXES:
                path = os.path.join(folder, "_setproctitle" + suffix)
                if not os.path.exists(path):
                    continue
                loader = ExtensionFileLoader(name, path)
                try:
                    module = loader.create_module(ModuleSpec(name, loader, origin=path))
                    loader.exec_module(module)
                except ImportError:
                    return None
                sys.modules[name] = module
                break
            if module is not None:
                break
    setter = getattr(module, "setproctitle", None)
    return setter if callable(setter) else None


# --- starting ----------------------------------------------------------------------------------------------


def run_child(
    func: Callable[[], object],
    write_fd: int,
    close_fds: Sequence[int],
    error_fd: int | None = None,
    enter: Callable[[], None] | None = None,
) -> NoReturn:
    """In a forked task: become a session (and process group) of its own, call ``enter()`` (the run's
    context, the process title), send stdout and stderr to ``write_fd``, call ``func()``, exit. Never returns.

    A ``func`` that raises prints its traceback and exits 1; its one-line text goes to ``error_fd`` (the
    run's error). The ``atexit`` handlers ``func`` registers run when it ends, as at a Python program's exit
    (an error reporter's flush, say), with their output in the run's; those the child inherited from its
    supervisor are not its own and never run (the child ends with ``os._exit``, as every forked icc process)."""
    code = 1
    atexit._clear()
    try:
        os.setsid()
        if enter is not None:
            enter()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        for fd in close_fds:
            try:  # noqa: SIM105 (contextlib is not imported on the light minute's path)
                os.close(fd)
            except OSError:
                pass
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        try:
            func()
            code = 0
        except SystemExit as exc:
            code = exit_code(exc)
        except BaseException as exc:
            import traceback  # lazy: only a task that raised prints a traceback

            try:  # noqa: SIM105 (contextlib is not imported on the light path); what it printed comes first
                sys.stdout.flush()
            except Exception:  # noqa: S110 (a broken stdout: the traceback still goes to stderr)
                pass
            traceback.print_exc()
            code = 1
            if error_fd is not None:
                try:  # noqa: SIM105 (contextlib is not imported on the light minute's path)
                    os.write(error_fd, exception_text(exc).encode("utf-8", errors="replace")[:4096])
                except Exception:  # noqa: S110 (an exception whose text fails: the traceback says it all)
                    pass
    finally:
        try:
            atexit._run_exitfuncs()  # prints what a handler raised, as Python's exit does
        finally:
            exit_forked(code)


def detach(
    targets: Sequence[Callable[[], object]],
    timeout: float,
    prepare: Callable[[], object] | None = None,
) -> list[int | None]:
    """Start one detached supervisor per target and return each one's pid: 0 when it exited before it
    reported, None when it did not report within ``timeout`` seconds (it may still start its run).

    One intermediate process, forked once, forks them all and exits, so each is orphaned at once (no zombie)
    and the caller forks once, not once per supervisor: each fork of a big process copies its page tables,
    and twenty forks of the tick (with an intermediate each) cost more than the supervisors' own start. The
    intermediate starts a session apart from the caller's (so no supervisor is a session leader, which could
    acquire a controlling terminal); each supervisor takes a process group of its own in it, reports its pid on
    one pipe shared by all (a single short write: atomic), has its stdin, stdout and stderr on /dev/null, runs
    ``target()`` and exits. The caller must hold no SQLite connection (one must never cross a fork).

    ``prepare()``: called in the intermediate (its stdio already on /dev/null) before it forks the supervisors,
    so what it loads is loaded once for all of them; whatever it raises is ignored (each supervisor then does
    without). The caller waits for it: it must bound its own time."""
    if not targets:
        return []
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the intermediate, which never returns
        code = 0
        try:
            os.close(read_fd)
            os.setsid()
            if prepare is not None:
                _to_devnull()  # what it prints (a plugin's import) goes nowhere, as in the supervisors
                try:  # noqa: SIM105 (contextlib is not imported on the light minute's path)
                    prepare()
                except BaseException:  # noqa: S110 (the supervisors load for themselves and say what failed)
                    pass
            for index, target in enumerate(targets):
                if os.fork() == 0:
                    _detached(index, target, write_fd)
        except BaseException:
            code = 1  # the supervisors not forked yet are not reported: "exited before it reported"
        finally:
            exit_forked(code)
    os.close(write_fd)
    try:
        return _collect_pids(read_fd, len(targets), timeout)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)  # it exits as soon as it has forked the supervisors


def _detached(index: int, target: Callable[[], object], write_fd: int) -> NoReturn:
    """In the detached supervisor: a process group of its own, report its index and pid, leave the caller's
    stdio, run ``target``. Never returns."""
    try:
        os.setpgid(0, 0)
        os.write(write_fd, f"{index} {os.getpid()}\n".encode())
        os.close(write_fd)
        _to_devnull()
        target()
    finally:
        exit_forked(0)


def _to_devnull() -> None:
    """This process's stdin, stdout and stderr on /dev/null."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def within(limit: float, work: Callable[[], object]) -> bool:
    """Call ``work()``; False when it took longer than ``limit`` seconds: SIGALRM interrupts a plugin's import
    or hook that hangs in Python code (a plugin's loader records an exception as its failure, so the flag says
    whether the limit was reached). Any other exception of ``work()`` propagates. The one plugin-load limit of
    every supervisor: :func:`icc.tick.coordinator.load_within`, the background runs' intermediate and the
    light minute's foreground supervisor (:mod:`icc.tick.plain`)."""
    fired: list[bool] = []

    def on_alarm(_signum: int, _frame: object) -> None:
        fired.append(True)
        raise TimeoutError(f"loading the plugins took longer than {limit:g}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        work()
    except TimeoutError:
        fired.append(True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return not fired


def exit_forked(code: int) -> NoReturn:
    """End a forked process: flush what it wrote, then ``os._exit``, never the interpreter's own exit (in a
    forked child that tears down every module and object, touching each page the parent shared: ~9 ms of
    copy-on-write against ~1.3 ms)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: S110 (a closed or broken stdio: nothing more to say)
        pass
    finally:
        os._exit(code)


def _collect_pids(read_fd: int, count: int, timeout: float) -> list[int | None]:
    """Each supervisor's pid from the shared pipe (lines ``index pid``), read until EOF (every supervisor and
    the intermediate closed it) or ``timeout``: 0 for one that did not report when the pipe closed, None for
    one that said nothing in time."""
    buffer = b""
    closed = False
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(read_fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(timeout=left):
                continue
            chunk = os.read(read_fd, 65536)
            if not chunk:
                closed = True
                break
            buffer += chunk
    found: list[int | None] = [0 if closed else None] * count
    for line in buffer.decode("utf-8", errors="replace").splitlines():
        index, _, pid = line.partition(" ")
        if index.isdigit() and pid.isdigit() and int(index) < count:
            found[int(index)] = int(pid)
    return found


# --- the loop ----------------------------------------------------------------------------------------------


class Watch:
    """One task (the process group led by ``pid``, its output on ``read_fd``) watched by its supervisor until it
    has exited: the one supervise loop.

    Each chunk of output goes to ``take``. At ``deadline`` (epoch seconds) the task times out: SIGTERM to its
    process group, SIGKILL ``grace`` seconds later. ``check(watch, now)``, called at each wake-up (at most
    ``every`` seconds apart when given), may :meth:`stop` it. The loop sleeps in ``select`` on the output,
    the task's pidfd (its exit, even while a process it started holds the output open) and the descriptors
    given to :meth:`on_readable`; it does not wait for the output to close once the task exited."""

    def __init__(
        self, pid: int, read_fd: int, take: Callable[[bytes], None], *, deadline: float | None, grace: float
    ) -> None:
        self.pid = pid
        self.read_fd = read_fd
        self.take = take
        self.deadline = deadline
        self.grace = grace
        self.timed_out = False
        self.kill_at: float | None = None  # when SIGKILL goes to the group
        self.status: int | None = None  # the task's wait status, once reaped
        self.pipe_open = True
        self.readers: dict[int, Callable[[], bool]] = {}
        self.sel = selectors.DefaultSelector()
        self.pidfd: int | None = None

    def on_readable(self, fd: int, handler: Callable[[], bool]) -> None:
        """Call ``handler()`` when ``fd`` can be read; it returns False when ``fd`` is done with (EOF)."""
        self.readers[fd] = handler

    def stop(self, now: float, within: float, *, send: bool = True) -> None:
        """End the task: SIGTERM to its process group (unless it was ``send`` already), SIGKILL at most
        ``within`` seconds from ``now``."""
        if send:
            kill_group(self.pid, signal.SIGTERM)
        at = now + within
        self.kill_at = at if self.kill_at is None else min(self.kill_at, at)

    def run(self, check: Callable[[Watch, float], None] | None = None, every: float | None = None) -> int:
        """Watch until the task exited and its buffered output is read; its wait status."""
        self.sel.register(self.read_fd, selectors.EVENT_READ)
        for fd in self.readers:
            self.sel.register(fd, selectors.EVENT_READ)
        try:  # its exit wakes the loop, rather than a sleep once its output is closed
            self.pidfd = os.pidfd_open(self.pid)
            self.sel.register(self.pidfd, selectors.EVENT_READ)
        except (OSError, AttributeError):
            self.pidfd = None
        try:
            while True:
                now = time.time()
                if self._reaped():
                    self._drain()
                    break
                self._keep_time_limit(now)
                if check is not None:
                    check(self, now)
                if self.kill_at is not None and now >= self.kill_at:
                    kill_group(self.pid, signal.SIGKILL)
                    self.kill_at = now + KILL_SENT  # sent; wait for the exit
                self._sleep(now, every)
        finally:
            self._close_pidfd()
            self.sel.close()
        assert self.status is not None
        return self.status

    def _reaped(self) -> bool:
        waited, status = os.waitpid(self.pid, os.WNOHANG)
        if waited == self.pid:
            self.status = status
            self._close_pidfd()
        return self.status is not None

    def _close_pidfd(self) -> None:
        if self.pidfd is not None:
            self.sel.unregister(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None

    def _keep_time_limit(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline and self.kill_at is None:
            self.timed_out = True
            self.stop(now, self.grace)

    def _sleep(self, now: float, every: float | None) -> None:
        """Until the next event (output, the exit, a reader's fd), the time limit, the kill, or ``every``."""
        moments = [self.kill_at if self.kill_at is not None else self.deadline]
        wait = min((m - now for m in moments if m is not None), default=None)
        if every is not None:
            wait = every if wait is None else min(wait, every)
        if self.pidfd is None:  # nothing wakes the loop at the exit (not Linux): look at it now and then
            look = NO_PIDFD_LOOK if self.pipe_open else NO_PIDFD_WAIT
            wait = look if wait is None else min(wait, look)
        wait = None if wait is None else max(wait, 0.0)
        if not self.sel.get_map():
            time.sleep(wait or 0.0)
            return
        for key, _ in self.sel.select(timeout=wait):
            if key.fd == self.pidfd:
                continue  # it exited: the next round reaps it
            if key.fd != self.read_fd:
                if not self.readers[key.fd]():
                    self.sel.unregister(key.fd)
                continue
            if not self._read():
                break

    def _read(self) -> bool:
        """Read one chunk of output; False at its end."""
        chunk = os.read(self.read_fd, 65536)
        if not chunk:
            self.pipe_open = False
            self.sel.unregister(self.read_fd)
            return False
        self.take(chunk)
        return True

    def _drain(self) -> None:
        """The task is gone: take what is still buffered, without waiting for grandchildren that keep the
        output open."""
        while self.pipe_open:
            ready = [key.fd for key, _ in self.sel.select(timeout=DRAIN_WAIT)]
            if self.read_fd not in ready:
                for fd in ready:
                    if not self.readers[fd]():
                        self.sel.unregister(fd)
                if not ready:
                    return
                continue
            self._read()


def watch_all(
    watches: Sequence[Watch],
    ended: Callable[[Watch], None],
    check: Callable[[Watch, float], None] | None = None,
    wake: int | None = None,
) -> None:
    """Watch several tasks in one loop, as :meth:`Watch.run` watches one (their output, time limits, kills,
    ``check`` at each wake-up), sleeping in one ``select`` over all their descriptors; ``ended(watch)`` is
    called as each one has exited and its buffered output is read (its ``status`` set), in the order they
    end. A task that exited while a process it started holds its output open is done once no output came
    for :data:`DRAIN_WAIT` seconds, without holding up the others. ``wake``: a non-blocking descriptor
    whose data wakes the loop (drained), so ``check`` sees at once what a signal handler set (the read end of
    :func:`signal.set_wakeup_fd`'s pipe)."""
    sel = selectors.DefaultSelector()
    if wake is not None:
        sel.register(wake, selectors.EVENT_READ, wake)
    live = list(watches)
    draining: dict[int, float] = {}  # id(watch) -> when it is done if no more output comes
    for watch in live:
        watch.sel.close()  # its own selector, unused: the one loop's serves all of them
        watch.sel = sel
        sel.register(watch.read_fd, selectors.EVENT_READ, watch)
        try:
            watch.pidfd = os.pidfd_open(watch.pid)
            sel.register(watch.pidfd, selectors.EVENT_READ, None)  # its exit wakes the loop
        except (OSError, AttributeError):
            watch.pidfd = None
    try:
        while live:
            now = time.time()
            for watch in list(live):
                if id(watch) not in draining:
                    if not watch._reaped():
                        watch._keep_time_limit(now)
                        if check is not None:
                            check(watch, now)
                        if watch.kill_at is not None and now >= watch.kill_at:
                            kill_group(watch.pid, signal.SIGKILL)
                            watch.kill_at = now + KILL_SENT  # sent; wait for the exit
                        continue
                    draining[id(watch)] = now + DRAIN_WAIT
                if watch.pipe_open and now < draining[id(watch)]:
                    continue
                if watch.pipe_open:
                    sel.unregister(watch.read_fd)
                    watch.pipe_open = False
                live.remove(watch)
                ended(watch)
            if not live:
                break
            moments = [draining.get(id(w), w.kill_at if w.kill_at is not None else w.deadline) for w in live]
            wait = min((m - now for m in moments if m is not None), default=None)
            if any(w.pidfd is None and id(w) not in draining for w in live):
                look = NO_PIDFD_LOOK if all(w.pipe_open for w in live) else NO_PIDFD_WAIT
                wait = look if wait is None else min(wait, look)
            for key, _ in sel.select(timeout=None if wait is None else max(wait, 0.0)):
                watch = key.data
                if watch is None:
                    continue  # an exit: the next round reaps it
                if isinstance(watch, int):  # the wake-up descriptor
                    try:  # noqa: SIM105 (contextlib is not imported on the light minute's path)
                        os.read(watch, 512)
                    except OSError:
                        pass
                    continue  # the next round's check sees it
                if watch._read() and id(watch) in draining:
                    draining[id(watch)] = time.time() + DRAIN_WAIT
    finally:
        for watch in watches:
            watch._close_pidfd()
        sel.close()


def exit_of(status: int) -> tuple[int, str | None]:
    """A task's exit code from its wait ``status`` (minus the signal that killed it), and, when a signal
    did, the error saying which."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status), f"killed by {signal_name(os.WTERMSIG(status))}"
    return os.WEXITSTATUS(status), None


def task_outcome(
    status: int,
    *,
    timed_out: bool,
    timeout: float | None,
    stopped: str | None,
    raised: str | None = None,
) -> tuple[Outcome, int, str | None]:
    """The run's outcome, exit code and error from its task's wait ``status``: timed out (``timed_out``, at
    ``timeout`` seconds), stopped (``stopped`` is the error saying by what), succeeded, or failed (a callable
    that raised: ``raised``, its exception's text)."""
    code, error = exit_of(status)
    if timed_out:
        return "timed_out", code, f"timed out after {timeout:g}s; its process group was killed"
    if stopped is not None:
        return "stopped", code, stopped
    if code == 0:
        return "succeeded", code, None
    return "failed", code, error or (raised if raised and code == 1 else f"exit code {code}")
