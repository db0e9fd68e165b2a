"""icc.supervise.process.watch_all: several tasks watched in one loop, as Watch.run watches one: each one's
output, time limit and exit, each reported as it ends, none held up by another."""

from __future__ import annotations

import os
import signal
import time

from icc.supervise.process import OutputKeeper, Watch, exit_of, kill_group, watch_all


def start(code: str, deadline: float | None = None, grace: float = 1.0) -> tuple[Watch, OutputKeeper]:
    """A real child process in a process group of its own running ``code`` (Python), its output on a pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setsid()
            os.dup2(write_fd, 1)
            os.close(read_fd)
            os.execv("/bin/sh", ["/bin/sh", "-c", code])
        finally:
            os._exit(127)
    os.close(write_fd)
    keeper = OutputKeeper(1024)
    return Watch(pid, read_fd, keeper.add, deadline=deadline, grace=grace), keeper


def test_tasks_are_reported_as_each_ends_with_their_output_and_a_time_limit_kept() -> None:
    now = time.time()
    quick, quick_out = start("echo quick; exit 3")
    slow, slow_out = start("echo slow; sleep 0.5; echo done")
    hang, hang_out = start("echo hang; exec sleep 30", deadline=now + 0.3)
    ended: list[tuple[str, float]] = []
    names = {id(quick): "quick", id(slow): "slow", id(hang): "hang"}
    try:
        watch_all([quick, slow, hang], lambda w: ended.append((names[id(w)], time.time() - now)))
    finally:
        for w in (quick, slow, hang):
            kill_group(w.pid, signal.SIGKILL)
            os.close(w.read_fd)
    assert [name for name, _ in ended] == ["quick", "hang", "slow"]
    assert ended[0][1] < 0.3  # not held up by the others
    assert 0.3 <= ended[1][1] < 2.0  # SIGTERM at its deadline
    assert quick.status is not None and exit_of(quick.status) == (3, None)
    assert hang.timed_out and hang.status is not None and exit_of(hang.status)[1] == "killed by SIGTERM"
    assert slow.status is not None and exit_of(slow.status) == (0, None)
    assert (quick_out.text(), slow_out.text(), hang_out.text()) == ("quick\n", "slow\ndone\n", "hang\n")


def test_a_task_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    now = time.time()
    stubborn, _ = start("trap '' TERM; sleep 30", deadline=now + 0.2, grace=0.3)
    ended: list[float] = []
    try:
        watch_all([stubborn], lambda w: ended.append(time.time() - now))
    finally:
        kill_group(stubborn.pid, signal.SIGKILL)
        os.close(stubborn.read_fd)
    assert stubborn.status is not None and exit_of(stubborn.status)[1] == "killed by SIGKILL"
    assert 0.5 <= ended[0] < 3.0


def test_a_task_whose_grandchild_keeps_its_output_open_is_done_at_its_exit() -> None:
    now = time.time()
    leaver, out = start("echo parent; (sleep 5; echo late) & exit 0")
    ended: list[float] = []
    try:
        watch_all([leaver], lambda w: ended.append(time.time() - now))
    finally:
        kill_group(leaver.pid, signal.SIGKILL)
        os.close(leaver.read_fd)
    assert ended[0] < 2.0  # the grandchild holding the pipe does not hold the loop
    assert out.text() == "parent\n"
