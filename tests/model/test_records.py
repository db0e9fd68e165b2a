"""``icc.records.record`` behaves as ``dataclasses.dataclass`` for what icc's internal records use: the
constructor (positional, keyword, defaults, factories, keyword-only), repr, equality, hashing, frozenness."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
from icc.records import record


def _pair(frozen: bool, kw_only: bool = False) -> tuple[type, type]:
    def body(decorate):  # type: ignore[no-untyped-def]
        @decorate
        class Thing:
            """A thing."""

            name: str
            count: int = 0
            tags: list[str] = field(default_factory=list)
            note: str | None = field(default=None, repr=False, compare=False)

            def shout(self) -> str:
                return self.name.upper()

        return Thing

    return (
        body(dataclass(frozen=frozen, kw_only=kw_only)),
        body(record(frozen=frozen, kw_only=kw_only)),
    )


@pytest.mark.parametrize("frozen", [False, True])
def test_a_record_is_built_compared_and_shown_as_the_dataclass_would(frozen: bool) -> None:
    dc, rc = _pair(frozen)
    for args, kwargs in [
        (("a",), {}),
        (("a", 2), {}),
        (("a",), {"tags": ["x"], "note": "n"}),
        ((), {"name": "b"}),
    ]:
        d, r = dc(*args, **kwargs), rc(*args, **kwargs)
        assert repr(r) == repr(d)
        assert r == rc(*args, **kwargs) and r.shout() == d.shout()
        assert (r == rc("other")) == (d == dc("other"))
    assert rc("a", note="x") == rc("a", note="y")  # compare=False, as the dataclass
    assert rc("a").tags is not rc("a").tags  # a fresh list per instance
    assert rc("a") != dc("a")  # another class is never equal
    assert rc.count == 0 and "name" not in rc.__dict__  # class attributes as the dataclass leaves them


def test_a_frozen_record_refuses_assignment_and_hashes_by_its_compared_fields() -> None:
    dc, rc = _pair(frozen=True)
    r = rc("a", 1, ("t",), note="x")
    assert hash(r) == hash(dc("a", 1, ("t",), note="x"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.name = "b"
    with pytest.raises(dataclasses.FrozenInstanceError):
        del r.count
    assert hash(r) == hash(rc("a", 1, ("t",), note="other"))
    assert len({rc("a", tags=()), rc("a", tags=()), rc("b", tags=())}) == 2
    with pytest.raises(TypeError):
        hash(rc("a"))  # a list among the compared fields, as with the dataclass


def test_a_mutable_record_is_unhashable_and_assignable_as_the_dataclass() -> None:
    dc, rc = _pair(frozen=False)
    r = rc("a")
    r.count = 5
    assert r.count == 5
    with pytest.raises(TypeError):
        hash(r)
    with pytest.raises(TypeError):
        hash(dc("a"))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), (("a", 1, [], None, "extra"), {}), (("a",), {"name": "b"}), (("a",), {"bogus": 1})],
)
def test_a_wrong_call_is_a_type_error_as_with_the_dataclass(args: tuple, kwargs: dict) -> None:  # type: ignore[type-arg]
    dc, rc = _pair(frozen=True)
    with pytest.raises(TypeError):
        dc(*args, **kwargs)
    with pytest.raises(TypeError):
        rc(*args, **kwargs)


def test_keyword_only_records_take_no_positional_argument() -> None:
    dc, rc = _pair(frozen=True, kw_only=True)
    with pytest.raises(TypeError):
        rc("a")
    assert repr(rc(name="a")) == repr(dc(name="a"))


def test_the_due_ticks_records_are_defined_without_dataclasses() -> None:
    """The classes converted for issue 17's due minute stay records (a dataclass there would cost its compile
    again); the public model stays dataclasses."""
    from icc.config import Config, StoreConfig
    from icc.jobs import RunResult
    from icc.store.protocol import Claim, RunRecord
    from icc.supervise.supervisor import RunSpec
    from icc.tick.coordinator import TickReport, TickRow

    for cls in (StoreConfig, Claim, RunSpec, TickReport, TickRow):
        assert not dataclasses.is_dataclass(cls), cls
    for cls in (Config, RunResult, RunRecord):
        assert dataclasses.is_dataclass(cls), cls
