"""Message types on the wire: the ``@message`` decorator, schema hashes, the registry.

A message type is a dataclass with a stable name and a priority. Its schema hash is
computed from its canonical schema: field names and types, nested types by structure,
never the type's own name, so a peer built against a renamed or re-namespaced type
still routes by hash. ``docs/protocol.md`` specifies the canonical form so that a robot
written in C or JavaScript computes the same hash.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar, Union, cast

import msgspec

from edgeloop.priority import Priority

if typing.TYPE_CHECKING:
    from edgeloop.config import ConfigSection

T = TypeVar("T")

_SCALARS: dict[Any, str] = {int: "int", float: "float", bool: "bool", str: "str", bytes: "bytes"}
_INFO = "__el_message__"


class ProtocolError(Exception):
    """A frame the peer sent that we refuse, with the code of the error frame to answer."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class MessageInfo:
    name: str
    priority: Priority
    schema: str  # canonical form, see docs/protocol.md
    schema_hash: int  # first 8 bytes of SHA-256(schema), big-endian
    type: type
    senders: frozenset[str]  # roles that may send it (see edgeloop.net.auth)
    key: str | None = None  # NORMAL: the field naming the entity; conflated per its value


DEFAULT_SENDERS = frozenset({"device", "operator", "admin"})


def message(
    name: str,
    priority: Priority = Priority.NORMAL,
    senders: typing.Iterable[str] = DEFAULT_SENDERS,
    key: str | None = None,
) -> typing.Callable[[type[T]], type[T]]:
    """Register a dataclass as a wire message: ``@message(name="robot.Telemetry")``.

    ``senders``: the roles a peer must have to send it (commands: operator and admin).
    ``key``: for NORMAL messages, the field that names the entity they are about
    (``robot_id``): the latest is kept per (connection, type, key value), so a gateway
    streaming many entities on one connection loses none of them to another's update.
    Without it, per (connection, type).

    The decorator only records the name, priority and schema hash on the class; which
    types a provider accepts is decided by the ``Registry`` it is given.
    """

    def register(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"@message({name!r}): {cls.__qualname__} must be a dataclass")
        if key is not None and key not in {f.name for f in dataclasses.fields(cls)}:
            raise TypeError(f"@message({name!r}): key {key!r} is not a field of {cls.__qualname__}")
        schema = canonical_schema(cls)
        found = MessageInfo(
            name, Priority(priority), schema, schema_hash(schema), cls, frozenset(senders), key
        )
        setattr(cls, _INFO, found)
        return cls

    return register


def info(cls: type) -> MessageInfo:
    found = getattr(cls, _INFO, None)
    if not isinstance(found, MessageInfo) or found.type is not cls:
        raise TypeError(f"{cls.__qualname__} is not a message type: decorate it with @message")
    return found


def schema_hash(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big")


def canonical_schema(cls: type) -> str:
    """``{name:type,...}`` with fields sorted by name; see docs/protocol.md."""
    hints = typing.get_type_hints(cls)
    fields = sorted(f.name for f in dataclasses.fields(cls))
    return "{" + ",".join(f"{f}:{_canonical_type(hints[f], cls, f)}" for f in fields) + "}"


def field_types(cls: type) -> list[tuple[str, str]]:
    """Each field's name and canonical type, in the order the type declares them."""
    hints = typing.get_type_hints(cls)
    return [(f.name, _canonical_type(hints[f.name], cls, f.name)) for f in dataclasses.fields(cls)]


def _canonical_type(hint: Any, owner: type, field: str) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint in _SCALARS:
        return _SCALARS[hint]
    if hint is Any:
        return "any"
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1 and len(args) == 2:
            return _canonical_type(members[0], owner, field) + "?"
    if origin in (list, tuple) and args and (origin is list or args[-1] is Ellipsis):
        return f"list<{_canonical_type(args[0], owner, field)}>"
    if origin is dict and args and args[0] is str:
        return f"map<{_canonical_type(args[1], owner, field)}>"
    if origin is Literal and all(isinstance(a, str) for a in args):
        return "enum<" + ",".join(sorted(args)) + ">"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [m.value for m in hint]
        if all(isinstance(v, str) for v in values):
            return "enum<" + ",".join(sorted(values)) + ">"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return canonical_schema(hint)
    raise TypeError(
        f"{owner.__qualname__}.{field}: {hint!r} has no wire form; use int, float, bool, str, "
        "bytes, Any, list[T], dict[str, T], T | None, a str Literal or Enum, or a dataclass"
    )


@dataclass(frozen=True, slots=True)
class Resolved:
    info: MessageInfo
    by_hash: bool  # found by schema hash after the name was unknown (a renamed type)


# A hash shared by several types; also what an envelope of no registered type names.
_AMBIGUOUS = MessageInfo("", Priority.LOW, "", 0, type(None), frozenset())


class Envelope(msgspec.Struct, array_like=True, gc=False):
    """A msgpack triple decoded in one pass into its typed message: each registered type
    has its own subclass, tagged with the type's name (the triple's first element)."""

    hash: int
    message: Any
    info: ClassVar[MessageInfo] = _AMBIGUOUS  # no sender may send it


class Registry:
    """The message types one provider (or App) speaks, looked up by name, then hash."""

    def __init__(self, message_types: typing.Iterable[type] = ()) -> None:
        self._by_name: dict[str, MessageInfo] = {}
        self._by_hash: dict[int, MessageInfo] = {}
        self._envelopes: dict[str, type[Envelope]] = {}
        # Strict: anything it refuses takes the lenient path (split, resolve, build),
        # which accepts what it always did and names what is wrong.
        self.envelopes: msgspec.msgpack.Decoder[Envelope] = msgspec.msgpack.Decoder(Envelope)
        for cls in message_types:
            self.add(cls)

    def add(self, cls: type) -> MessageInfo:
        found = info(cls)
        clash = self._by_name.get(found.name)
        if clash is not None and clash.type is not cls:
            raise ValueError(f"message name {found.name!r} is taken by {clash.type.__qualname__}")
        self._by_name[found.name] = found
        # Two types with one schema (e.g. Start/Stop with no fields) share a hash: the
        # hash then routes to neither, and such types must be addressed by name.
        same = self._by_hash.get(found.schema_hash)
        if same is not None and same.type is not cls:
            self._by_hash[found.schema_hash] = _AMBIGUOUS
        else:
            self._by_hash[found.schema_hash] = found
        if found.name not in self._envelopes:
            self._envelopes[found.name] = cast(
                "type[Envelope]",
                msgspec.defstruct(
                    "Envelope",
                    [("message", cls)],
                    bases=(Envelope,),
                    tag=found.name,
                    namespace={"info": found},
                ),
            )
            tagged: Any = Union[tuple(self._envelopes.values())]  # noqa: UP007 - built at run time
            self.envelopes = msgspec.msgpack.Decoder(tagged)
        return found

    def __contains__(self, cls: type) -> bool:
        found = getattr(cls, _INFO, None)
        return isinstance(found, MessageInfo) and self._by_name.get(found.name) is found

    def named(self, name: str) -> MessageInfo:
        """The type registered as ``name`` (``unknown_type`` if none)."""
        found = self._by_name.get(name)
        if found is None:
            raise ProtocolError("unknown_type", repr(name))
        return found

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def resolve(self, name: str, hash_: int) -> Resolved:
        known = self._by_name.get(name)
        if known is not None:
            if known.schema_hash != hash_:
                raise ProtocolError(
                    "version_mismatch",
                    f"{name}: peer schema hash {hash_:#018x}, ours {known.schema_hash:#018x}",
                )
            return Resolved(known, by_hash=False)
        by_hash = self._by_hash.get(hash_)
        if by_hash is None or by_hash is _AMBIGUOUS:
            raise ProtocolError("unknown_type", f"{name!r} (schema hash {hash_:#018x})")
        return Resolved(by_hash, by_hash=True)


def registry_of(
    sections: typing.Iterable[ConfigSection], present: typing.Iterable[str]
) -> Registry:
    """The wire message types of the configured plugins: the same in both processes."""
    wanted = set(present)
    return Registry(t for s in sections if s.name in wanted for t in s.message_types)
