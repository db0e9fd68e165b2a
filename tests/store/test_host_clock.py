"""Hosts on a shared store record themselves and their clock's offset from the database server's; a skewed
host is warned about (tick, status, metrics) and, past the larger bound, its ticks claim nothing.

A host's clock is skewed for real with libfaketime (``LD_PRELOAD`` on the `icc` process, Debian package
``faketime``). Without it these tests skip, unless ``TESTS_REQUIRE_POSTGRES=1`` (``.ci/run`` installs it)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest
from conftest import migrated_url
from pgkit import REQUIRE_VARIABLE
from projectkit import Project, at

PLUGIN = """
@icc.hookimpl
def schedule(scheduler):
    def a():
        with open(os.path.join(os.environ["MARKER_DIR"], "a"), "a") as f:
            f.write("ran\\n")
    scheduler.add(a, name="a").every_minute()
"""


def _libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        message = "libfaketime is not installed (apt-get install faketime)"
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(f"{message} ({REQUIRE_VARIABLE}=1 makes this a failure)", pytrace=False)
        pytest.skip(message)
    return found[0]


@pytest.fixture
def shared_url(pg_url: str) -> str:
    return migrated_url(pg_url)


def host(tmp_path: Path, url: str, name: str, skew: str | None = None) -> Project:
    proj = Project(tmp_path / name, store_url=url, host_id=name)
    proj.root.mkdir()
    proj.write_config()
    proj.write_plugin(PLUGIN)
    if skew is not None:
        proj.env.update({"LD_PRELOAD": _libfaketime(), "FAKETIME": skew})
    return proj


def hosts_of(proj: Project) -> dict[str, dict[str, object]]:
    return {h["host_id"]: h for h in proj.status()["hosts"]}


def test_a_full_tick_records_its_host_and_its_clock_offset(tmp_path: Path, shared_url: str) -> None:
    web1 = host(tmp_path, shared_url, "web-1")
    web1.icc("scan", check=True)
    assert hosts_of(web1) == {}  # a scan is no tick
    done = web1.icc("run", "--at", at(0), check=True)
    assert "clock" not in done.stderr
    seen = hosts_of(web1)["web-1"]
    assert seen["this_host"] and not seen["skewed"] and not seen["refused"]
    assert abs(float(str(seen["clock_offset"]))) < 2  # same machine, same clock
    assert seen["hostname"] == os.uname().nodename and seen["last_seen"]
    metrics = web1.icc("metrics", check=True).stdout
    assert "# TYPE icc_host_clock_offset_seconds gauge" in metrics
    assert 'icc_host_clock_offset_seconds{host="web-1"} ' in metrics


def test_a_host_whose_clock_is_skewed_past_the_warning_bound_is_warned_about(
    tmp_path: Path, shared_url: str
) -> None:
    web1 = host(tmp_path, shared_url, "web-1")
    web2 = host(tmp_path, shared_url, "web-2", skew="+20s")
    web1.icc("scan", check=True)
    done = web2.icc("run", "--at", at(0))
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "clock" in line]
    assert len(warnings) == 1, done.stderr
    assert "20." in warnings[0] and "ahead of" in warnings[0] and "NTP" in warnings[0]
    assert "Traceback" not in done.stderr
    assert web2.marker_lines("a") == ["ran"]  # warned, not refused
    seen = hosts_of(web1)  # any host's status shows it
    assert seen["web-2"]["skewed"] and not seen["web-2"]["refused"] and not seen["web-2"]["this_host"]
    assert 19 < float(str(seen["web-2"]["clock_offset"])) < 22
    text = web1.icc("status", check=True).stdout
    assert "web-2" in text and "sync it with NTP" in text
    metrics = web1.icc("metrics", check=True).stdout
    line = next(
        m for m in metrics.splitlines() if m.startswith('icc_host_clock_offset_seconds{host="web-2"}')
    )
    assert 19 < float(line.split()[-1]) < 22


@pytest.mark.parametrize("skew", ["+90s", "-90s"])
def test_a_host_whose_clock_is_skewed_past_the_refusal_bound_claims_nothing(
    tmp_path: Path, shared_url: str, skew: str
) -> None:
    web1 = host(tmp_path, shared_url, "web-1")
    web2 = host(tmp_path, shared_url, "web-2", skew=skew)
    web1.icc("scan", check=True)
    done = web2.icc("run", "--at", at(0))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "90." in lines[0] and "nothing was claimed" in lines[0] and "NTP" in lines[0]
    assert ("ahead of" if skew.startswith("+") else "behind") in lines[0]
    assert web2.runs() == [] and web2.marker_lines("a") == []
    seen = hosts_of(web1)["web-2"]
    assert seen["refused"] and seen["skewed"]
    assert "its ticks refuse to run" in web1.icc("status", check=True).stdout
    # The host with a good clock runs the slot.
    web1.icc("run", "--at", at(0), check=True)
    assert [r["outcome"] for r in web1.runs("a")] == ["succeeded"]


def test_icc_work_on_a_host_whose_clock_is_skewed_past_the_refusal_bound_exits_2(
    tmp_path: Path, shared_url: str
) -> None:
    web1 = host(tmp_path, shared_url, "web-1", skew="-90s")
    web1.icc("scan", check=True)
    done = web1.icc("work", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "behind the database server's" in lines[0], done.stderr
    assert web1.runs() == [] and web1.marker_lines("a") == []


def test_a_sqlite_store_has_no_hosts_and_no_clock_offset(tmp_path: Path) -> None:
    proj = Project(tmp_path / "solo")
    proj.root.mkdir()
    proj.write_config()
    proj.write_plugin(PLUGIN)
    proj.icc("scan", check=True)
    done = proj.icc("run", "--at", at(0), check=True)
    assert "clock" not in done.stderr
    assert proj.status()["hosts"] == []
    assert "icc_host_clock_offset_seconds{" not in proj.icc("metrics", check=True).stdout
