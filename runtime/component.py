"""Components: typed, slotted data records whose writes mark change by themselves.

A component is declared like a dataclass::

    class TankLevel(Component):
        level_m: float = 0.0
        quality: Quality = Quality.GOOD

Why a write-through setter instead of an explicit ``world.mark_changed``: a control
engineer writes ``pump.speed = out`` and expects the Modbus driver to see it. A forgotten
mark would silently freeze an actuator, so assignment itself marks the change, and only
when the value differs by ``!=`` (``pump.speed = pump.speed`` is not a change; a NaN
differs from itself, so writing NaN always marks). That costs one Python-level call per
field write, ~250 ns against ~6 ns for a plain slot (``bench/world_bench.py``); reads
are plain slot reads.

The one way to change a value without assigning a field is to mutate a container in place,
so component fields are restricted to immutable *state types* (see ``STATE_TYPES``): there
is no list to ``append`` to. The same restriction defines what ``World.state_hash`` hashes.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, dataclass_transform

if TYPE_CHECKING:
    from collections.abc import Callable

_MISSING = object()
_set_slot = object.__setattr__

STATE_TYPES = "int, float, bool, str, bytes, None, Enum, tuple[...] and frozen dataclasses of these"


class _ChangeSink(Protocol):
    def mark_changed(self, entity: int) -> None: ...


@dataclass_transform(eq_default=True)
class _ComponentMeta(type):
    """Turns annotated class attributes into slots with a generated ``__init__``."""

    def __new__(
        mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kwargs: Any
    ) -> _ComponentMeta:
        if ns.get("__module__") == __name__ and name == "Component":
            return super().__new__(mcls, name, bases, ns, **kwargs)
        inherited: tuple[str, ...] = ()
        inherited_defaults: dict[str, Any] = {}
        for base in bases:
            inherited += getattr(base, "__el_fields__", ())
            inherited_defaults.update(getattr(base, "__el_defaults__", {}))
        own = tuple(
            field
            for field, hint in ns.get("__annotations__", {}).items()
            if not _is_classvar(hint) and field not in inherited
        )
        # A subclass may give an inherited field a new default (`x: float = 5.0`).
        overridden = {f: ns.pop(f) for f in inherited if f in ns}
        defaults = {**inherited_defaults, **overridden, **{f: ns.pop(f) for f in own if f in ns}}
        ns["__slots__"] = own
        cls = super().__new__(mcls, name, bases, ns, **kwargs)
        fields = inherited + own
        _check_state_types(cls, own)
        type.__setattr__(cls, "__el_fields__", fields)
        type.__setattr__(cls, "__el_defaults__", defaults)
        type.__setattr__(cls, "__init__", _make_init(cls, fields, defaults))
        return cls


class Component(metaclass=_ComponentMeta):
    """Base class of every component. See the module docstring for the contract."""

    __slots__ = ("_el_entity", "_el_sink")
    __el_fields__: ClassVar[tuple[str, ...]] = ()
    __el_defaults__: ClassVar[dict[str, Any]] = {}
    if TYPE_CHECKING:
        # Slots, declared ClassVar only so type checkers keep them out of __init__.
        _el_entity: ClassVar[int]
        _el_sink: ClassVar[_ChangeSink | None]

    def __setattr__(self, name: str, value: Any) -> None:
        sink = self._el_sink
        if sink is None:
            _set_slot(self, name, value)
        elif getattr(self, name) != value:
            _set_slot(self, name, value)
            sink.mark_changed(self._el_entity)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.values() == other.values()

    __hash__ = None  # type: ignore[assignment]  # mutable: must not be a dict key

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__el_fields__)
        return f"{type(self).__name__}({args})"

    def values(self) -> tuple[Any, ...]:
        """The field values in declaration order."""
        return tuple(getattr(self, f) for f in self.__el_fields__)

    def attached(self) -> bool:
        """True while this instance is stored in a World (writes then mark change)."""
        return self._el_sink is not None


# Assign a field without marking the change, for code that writes many fields per tick
# from one source (a driver's block of points) and marks each touched component once
# with ``mark_changed`` instead of paying the write-through setter (a Python call) per
# field. Forgetting that call is the bug the setter exists to prevent: not for control
# logic.
assign_unmarked: Callable[[Component, str, Any], None] = object.__setattr__


def mark_changed(component: Component) -> None:
    """Mark the entity of ``component`` changed for its type (if it is in a World)."""
    sink = component._el_sink
    if sink is not None:
        sink.mark_changed(component._el_entity)


def _is_classvar(hint: object) -> bool:
    if isinstance(hint, str):
        return hint.startswith(("ClassVar", "typing.ClassVar"))
    return typing.get_origin(hint) is ClassVar


def _make_init(cls: type, fields: tuple[str, ...], defaults: dict[str, Any]) -> Callable[..., None]:
    # Generated source, like dataclasses: a loop over setattr calls would cost ~3x per spawn.
    params, body = [], []
    seen_default = False
    for field in fields:
        if field in defaults:
            params.append(f"{field}=__d_{field}")
            seen_default = True
        elif seen_default:
            raise TypeError(f"{cls.__qualname__}.{field}: a field without default follows one with")
        else:
            params.append(field)
        body.append(f"    __set(self, {field!r}, {field})")
    body.append("    __set(self, '_el_sink', None)")
    src = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body)
    env: dict[str, Any] = {f"__d_{k}": v for k, v in defaults.items()}
    env["__set"] = _set_slot
    local: dict[str, Any] = {}
    exec(src, env, local)  # the source is built from field identifiers only
    init: Callable[..., None] = local["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _check_state_types(cls: type, fields: tuple[str, ...]) -> None:
    try:
        hints = typing.get_type_hints(cls)
    except NameError:
        # A forward reference to a class defined later: checked when first stored
        # (World.storage calls check_state_types).
        return
    for field in fields:
        if not is_state_type(hints[field]):
            raise TypeError(
                f"{cls.__qualname__}.{field}: {hints[field]!r} is not a state type "
                f"({STATE_TYPES}); keep mutable objects in a resource"
            )


def check_state_types(cls: type) -> None:
    """``TypeError`` naming the first field of ``cls`` that is not a state type."""
    typing.get_type_hints(cls)  # NameError now means a truly unresolvable annotation
    _check_state_types(cls, cls.__dict__.get("__slots__", ()))
    for base in cls.__mro__[1:]:
        if isinstance(base, _ComponentMeta) and base is not Component:
            _check_state_types(base, base.__dict__.get("__slots__", ()))


_SCALARS: tuple[type, ...] = (int, float, bool, str, bytes, type(None))


def is_state_type(hint: Any) -> bool:
    """True if values of ``hint`` are immutable and hashable by ``World.state_hash``."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return all(is_state_type(arg) for arg in typing.get_args(hint))
    if origin is tuple:
        return all(arg is Ellipsis or is_state_type(arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return all(isinstance(arg, _SCALARS) for arg in typing.get_args(hint))
    if hint is None or hint in _SCALARS:
        return True
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return True
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        params = getattr(hint, "__dataclass_params__", None)
        return bool(params and params.frozen) and all(
            is_state_type(h) for h in typing.get_type_hints(hint).values()
        )
    return False
