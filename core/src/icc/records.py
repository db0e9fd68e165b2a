"""``@record``: dataclasses whose definition costs next to nothing at import.

:func:`dataclasses.dataclass` writes the source of each class's ``__init__``, ``__repr__``, ``__eq__`` (and, frozen,
``__setattr__``, ``__delattr__``, ``__hash__``) and compiles it while the module is imported: about 0.3 ms per
method on an idle machine, and a due ``icc run`` imported 31 such classes before it started its one run, a fifth
of the minute (issue 17). ``@record`` gives a class the same constructor (defaults, ``field(default_factory=...)``,
``kw_only``, ``__post_init__``), ``repr``, equality, hashing and frozenness with generic methods compiled once,
with this module, and the same ``__dataclass_fields__``: :func:`dataclasses.fields`, :func:`~dataclasses.replace`,
:func:`~dataclasses.asdict` and :func:`~dataclasses.is_dataclass` take a record as a dataclass. What it does not
give: ``slots``, ``InitVar``, ``order``, ``unsafe_hash``, fields with ``init=False``. On a Python whose
:mod:`dataclasses` does not have the internals it fills in, ``@record`` is ``@dataclass``. Type checkers read it
as a dataclass (``dataclass_transform``).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import MISSING, Field, FrozenInstanceError, field
from typing import TYPE_CHECKING, Any, TypeVar, dataclass_transform, overload

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

_Spec = tuple[str, Any, Any, bool, bool, Any]  # name, default, default factory, in repr, compared, annotation
_FIELD = getattr(dataclasses, "_FIELD", None)  # the marker of a field (not a ClassVar, not an InitVar)
# Instances after which a class gets a compiled ``__init__``, as a dataclass has from the start: a class made
# by the thousand (a job's records at scan) pays one compile, a class made a few times per tick none.
COMPILE_AFTER = 32
_FACTORY = object()  # a compiled __init__'s default for a field with a default factory


def _fields(cls: type) -> list[_Spec]:
    """The fields of ``cls`` in declaration order, its record bases' first (as a dataclass's)."""
    specs: dict[str, _Spec] = {}
    for base in reversed(cls.__mro__[1:]):
        for spec in base.__dict__.get("__record_fields__", ()):
            specs[spec[0]] = spec
    for name, annotation in inspect.get_annotations(cls).items():
        if "ClassVar" in str(annotation):
            continue
        default = cls.__dict__.get(name, MISSING)
        factory: Any = MISSING
        shown = compared = True
        if isinstance(default, Field):
            factory, shown, compared = default.default_factory, default.repr, default.compare
            default = default.default
        if default is MISSING:
            if name in cls.__dict__:
                delattr(cls, name)  # a dataclass leaves no class attribute for a field without a default
        else:
            setattr(cls, name, default)
        specs[name] = (name, default, factory, shown, compared, annotation)
    return list(specs.values())


def _build(cls: type[T], frozen: bool, kw_only: bool) -> type[T]:
    specs = _fields(cls)
    names = tuple(s[0] for s in specs)
    positional = () if kw_only else names
    shown = tuple(s[0] for s in specs if s[3])
    compared = tuple(s[0] for s in specs if s[4])
    qualname = cls.__qualname__
    assign = object.__setattr__
    post_init = getattr(cls, "__post_init__", None)

    def values(self: Any) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in compared)

    calls = [0]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] == COMPILE_AFTER and cls.__dict__.get("__init__") is __init__:
            compiled = _compiled_init(qualname, specs, kw_only, post_init)
            if compiled is not None:
                setattr(cls, "__init__", compiled)  # noqa: B010 - replaces this generic one
        if len(args) > len(positional):
            raise TypeError(
                f"{qualname}.__init__() takes {len(positional) + 1} positional arguments but "
                f"{len(args) + 1} were given"
            )
        for i, (name, default, factory, _shown, _compared, _annotation) in enumerate(specs):
            if i < len(args):
                if name in kwargs:
                    raise TypeError(f"{qualname}.__init__() got multiple values for argument '{name}'")
                value = args[i]
            elif name in kwargs:
                value = kwargs[name]
            elif factory is not MISSING:
                value = factory()
            elif default is not MISSING:
                value = default
            else:
                raise TypeError(f"{qualname}.__init__() missing 1 required argument: '{name}'")
            assign(self, name, value)
        unknown = [key for key in kwargs if key not in names]
        if unknown:
            raise TypeError(f"{qualname}.__init__() got an unexpected keyword argument '{unknown[0]}'")
        if post_init is not None:
            post_init(self)

    def __repr__(self: Any) -> str:
        inside = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{type(self).__qualname__}({inside})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(values(self) == values(other))

    namespace: dict[str, Any] = {"__init__": __init__, "__repr__": __repr__, "__eq__": __eq__}
    if frozen:

        def __setattr__(self: Any, name: str, value: object) -> None:
            if type(self) is cls or name in names:
                raise FrozenInstanceError(f"cannot assign to field {name!r}")
            object.__setattr__(self, name, value)

        def __delattr__(self: Any, name: str) -> None:
            if type(self) is cls or name in names:
                raise FrozenInstanceError(f"cannot delete field {name!r}")
            object.__delattr__(self, name)

        def __hash__(self: Any) -> int:
            return hash(values(self))

        namespace.update(__setattr__=__setattr__, __delattr__=__delattr__, __hash__=__hash__)
    else:
        namespace["__hash__"] = None  # as a dataclass with eq and not frozen: unhashable
    for name, method in namespace.items():
        if name in cls.__dict__ and (name != "__hash__" or cls.__dict__[name] is not None):
            continue  # the class's own, as a dataclass keeps it
        if method is not None:
            method.__qualname__ = f"{qualname}.{name}"
        setattr(cls, name, method)
    setattr(cls, "__record_fields__", specs)  # noqa: B010 - a name the class does not declare
    setattr(cls, "__match_args__", positional)  # noqa: B010 - as above
    setattr(cls, "__dataclass_fields__", _dataclass_fields(specs, kw_only))  # noqa: B010 - as above
    return cls


def _compiled_init(
    qualname: str, specs: list[_Spec], kw_only: bool, post_init: Callable[[Any], None] | None
) -> Callable[..., None] | None:
    """The ``__init__`` a dataclass would compile for these fields (None if it cannot be written)."""
    namespace: dict[str, Any] = {"__s": object.__setattr__, "__F": _FACTORY, "__p": post_init}
    params: list[str] = ["*"] if kw_only and specs else []
    lines: list[str] = []
    for i, (name, default, factory, _shown, _compared, _annotation) in enumerate(specs):
        if factory is not MISSING:
            namespace[f"__f{i}"] = factory
            params.append(f"{name}=__F")
            lines.append(f"__s(self, {name!r}, __f{i}() if {name} is __F else {name})")
        else:
            if default is not MISSING:
                namespace[f"__d{i}"] = default
            params.append(name if default is MISSING else f"{name}=__d{i}")
            lines.append(f"__s(self, {name!r}, {name})")
    if post_init is not None:
        lines.append("__p(self)")
    source = f"def __init__(self, {', '.join(params)}):\n" + "".join(
        f"    {line}\n" for line in lines or ["pass"]
    )
    try:
        exec(source, namespace)  # noqa: S102 - names and defaults of the class's own fields
    except SyntaxError:  # e.g. a field named like a keyword: the generic __init__ stays
        return None
    made: Callable[..., None] = namespace["__init__"]
    made.__qualname__ = f"{qualname}.__init__"
    return made


def _dataclass_fields(specs: list[_Spec], kw_only: bool) -> dict[str, Field[Any]]:
    """What :mod:`dataclasses`' functions read of a dataclass: a :class:`~dataclasses.Field` per field."""
    found: dict[str, Field[Any]] = {}
    for name, default, factory, shown, compared, annotation in specs:
        made: Field[Any] = field(
            default=default, default_factory=factory, repr=shown, compare=compared, kw_only=kw_only
        )
        made.name, made.type = name, annotation
        made._field_type = _FIELD  # type: ignore[attr-defined]
        found[name] = made
    return found


@overload
def record(cls: type[T], /) -> type[T]: ...


@overload
def record(*, frozen: bool = False, kw_only: bool = False) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(field_specifiers=(field, Field))
def record(
    cls: type[T] | None = None, /, *, frozen: bool = False, kw_only: bool = False
) -> type[T] | Callable[[type[T]], type[T]]:
    """``@record`` or ``@record(frozen=True, kw_only=True)``: as ``@dataclass`` with the same options."""

    def build(c: type[T]) -> type[T]:
        if _FIELD is None:  # a dataclasses module this was not written for: the real thing
            return dataclasses.dataclass(c, frozen=frozen, kw_only=kw_only)
        return _build(c, frozen, kw_only)

    return build if cls is None else build(cls)
