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


def test_dataclasses_functions_take_a_record_as_the_dataclass() -> None:
    dc, rc = _pair(frozen=True)
    d, r = dc("a", 2, ["x"], note="n"), rc("a", 2, ["x"], note="n")
    assert dataclasses.is_dataclass(rc) and dataclasses.is_dataclass(r)
    assert [(f.name, f.repr, f.compare) for f in dataclasses.fields(r)] == [
        (f.name, f.repr, f.compare) for f in dataclasses.fields(d)
    ]
    assert dataclasses.asdict(r) == dataclasses.asdict(d)
    changed = dataclasses.replace(r, count=3)
    assert type(changed) is rc and changed.count == 3 and changed.name == "a" and r.count == 2


def test_post_init_runs_after_the_fields_are_set() -> None:
    @record(frozen=True)
    class Checked:
        size: int

        def __post_init__(self) -> None:
            if self.size < 0:
                raise ValueError("size must not be negative")

    from icc.records import COMPILE_AFTER

    for size in range(COMPILE_AFTER + 2):  # the generic __init__, then the compiled one
        assert Checked(size).size == size
        with pytest.raises(ValueError, match="negative"):
            Checked(-1)


def test_the_due_ticks_dataclasses_are_records() -> None:
    """The classes a due tick defines are records (a dataclass there would cost its compiles again), and still
    dataclasses to every function of :mod:`dataclasses`."""
    from icc.config import Config, QueueConfig, StoreConfig
    from icc.jobs import Job, Provenance, RunContext, RunResult
    from icc.store.protocol import Claim, JobRecord, RunRecord
    from icc.supervise.supervisor import RunSpec
    from icc.tick.coordinator import TickReport, TickRow

    for cls in (Config, QueueConfig, StoreConfig, Job, Provenance, RunContext, RunResult, Claim, JobRecord):
        assert "__record_fields__" in cls.__dict__ and dataclasses.is_dataclass(cls), cls
    for cls in (RunRecord, RunSpec, TickReport, TickRow):
        assert "__record_fields__" in cls.__dict__, cls


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("kw_only", [False, True])
def test_a_record_made_by_the_dozen_gets_a_compiled_init_that_behaves_the_same(
    frozen: bool, kw_only: bool
) -> None:
    from icc.records import COMPILE_AFTER

    dc, rc = _pair(frozen, kw_only)
    generic = rc.__init__
    for i in range(COMPILE_AFTER + 1):
        r = rc(name=f"n{i}", tags=[str(i)]) if i % 2 else rc(name=f"n{i}")
        assert repr(r) == repr(dc(name=f"n{i}", tags=[str(i)]) if i % 2 else dc(name=f"n{i}"))
    assert rc.__init__ is not generic  # compiled now
    assert repr(rc(name="a", count=2, note="x")) == repr(dc(name="a", count=2, note="x"))
    assert rc(name="a").tags is not rc(name="a").tags
    if not kw_only:
        assert rc("a", 3) == rc(name="a", count=3)
    for args, kwargs in [((), {}), ((), {"name": "a", "bogus": 1}), (("a", 1, [], None, "extra"), {})]:
        with pytest.raises(TypeError):
            rc(*args, **kwargs)
