"""``StateStore.update_meta``: the read-modify-write notifications keep their per-job state with."""

from __future__ import annotations

from pathlib import Path

import pytest
from icc.state.sqlite import SQLiteStateStore


def test_update_meta_sees_the_stored_value_and_none_deletes_it(tmp_path: Path) -> None:
    store = SQLiteStateStore(tmp_path)
    seen: list[str | None] = []

    def bump(old: str | None) -> str:
        seen.append(old)
        return str(int(old or 0) + 1)

    assert store.update_meta("mail.alert:job", bump) == "1"
    assert store.update_meta("mail.alert:job", bump) == "2"
    assert seen == [None, "1"]
    assert store.update_meta("mail.alert:job", lambda old: None) is None
    assert store.get_meta("mail.alert:job") is None


def test_update_meta_writes_nothing_when_the_change_raises(tmp_path: Path) -> None:
    store = SQLiteStateStore(tmp_path)
    store.update_meta("ping:job", lambda old: "kept")

    def fails(old: str | None) -> str:
        raise RuntimeError("the mail could not be queued")

    with pytest.raises(RuntimeError):
        store.update_meta("ping:job", fails)
    assert store.get_meta("ping:job") == "kept"
    store.update_meta(
        "other", lambda old: "written"
    )  # the connection is usable: the transaction was rolled back
    assert SQLiteStateStore(tmp_path).get_meta("other") == "written"
