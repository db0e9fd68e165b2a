"""``StateStore.update_meta``: the read-modify-write notifications keep their per-job state with (both backends)."""

from __future__ import annotations

import pytest
from icc.config import Config
from icc.store import open_store
from store.test_store_contract import config  # noqa: F401  (fixture: a fresh store of each backend)


def test_update_meta_sees_the_stored_value_and_none_deletes_it(config: Config) -> None:  # noqa: F811
    store = open_store(config)
    seen: list[str | None] = []

    def bump(old: str | None) -> str:
        seen.append(old)
        return str(int(old or 0) + 1)

    assert store.update_meta("mail.alert:job", bump) == "1"
    assert store.update_meta("mail.alert:job", bump) == "2"
    assert seen == [None, "1"]
    assert store.update_meta("mail.alert:job", lambda old: None) is None
    assert store.get_meta("mail.alert:job") is None
    store.close()


def test_update_meta_writes_nothing_when_the_change_raises(config: Config) -> None:  # noqa: F811
    store = open_store(config)
    store.update_meta("ping:job", lambda old: "kept")

    def fails(old: str | None) -> str:
        raise RuntimeError("the mail could not be queued")

    with pytest.raises(RuntimeError):
        store.update_meta("ping:job", fails)
    with pytest.raises(RuntimeError):
        store.update_meta("absent", fails)  # no placeholder left behind either
    assert store.get_meta("ping:job") == "kept"
    assert store.get_meta("absent") is None
    store.update_meta(
        "other", lambda old: "written"
    )  # the connection is usable: the transaction was rolled back
    assert open_store(config).get_meta("other") == "written"
    store.close()
