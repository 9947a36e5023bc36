"""Interlock block: a boolean condition over World fields that holds outputs safe.

The condition is written as text::

    door.Door.open or tank1.TankLevel.level_m > 1.9

``and``, ``or``, ``not``, parentheses, one comparison (``< <= > >= == !=``) between two
operands, numbers, ``true``/``false`` and fields ``entity.Component.field``. It is
parsed here (a recursive-descent parser, never ``eval``) when the config is loaded, and
compiled to closures over the fields' components once at Startup, so a tick costs a few
calls and no lookup.

A field read from a device carries a quality (``level_m_quality``): while the quality
of any field the condition reads is not GOOD, the interlock holds, since a value nobody
vouches for must not keep a machine running.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from edgeloop.drivers.points import Quality
from edgeloop.field_ref import FieldIndex, FieldRef
from edgeloop.safety.safe_state import SafeState
from edgeloop.world import World

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_WORD = re.compile(r"[A-Za-z0-9_.+-]+")
_OPERATORS = ("<=", ">=", "==", "!=", "<", ">")  # two-character ones first
_ORDERING = ("<", "<=", ">", ">=")
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_CONSTANTS = {"true": True, "True": True, "false": False, "False": False}
_KEYWORDS = ("and", "or", "not")


class ExpressionError(ValueError):
    pass


# -- the syntax tree ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Const:
    value: bool | float
    column: int


@dataclass(frozen=True, slots=True)
class Field:
    ref: FieldRef
    column: int


@dataclass(frozen=True, slots=True)
class Compare:
    left: Const | Field
    op: str
    right: Const | Field


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple[Expr, ...]


Expr = Const | Field | Compare | Not | BoolOp


# -- parsing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "(", ")", "op", "and", "or", "not", "const", "field", "end"
    text: str
    column: int  # 1-based
    value: Any = None


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    at = 0
    while at < len(text):
        char = text[at]
        column = at + 1
        if char.isspace():
            at += 1
        elif char in "()":
            tokens.append(_Token(char, char, column))
            at += 1
        elif op := next((op for op in _OPERATORS if text.startswith(op, at)), None):
            tokens.append(_Token("op", op, column))
            at += len(op)
        elif match := _WORD.match(text, at):
            tokens.append(_word(match.group(), column))
            at = match.end()
        elif char == "=":
            raise ExpressionError(f"column {column}: '=' is not a comparison; write ==")
        else:
            raise ExpressionError(f"column {column}: unexpected character {char!r}")
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def _word(word: str, column: int) -> _Token:
    if word in _KEYWORDS:
        return _Token(word, word, column)
    if word in _CONSTANTS:
        return _Token("const", word, column, _CONSTANTS[word])
    if _NUMBER.fullmatch(word):
        return _Token("const", word, column, float(word))
    try:
        return _Token("field", word, column, FieldRef.parse(word))
    except ValueError:
        raise ExpressionError(
            f"column {column}: {word!r} is not a number, true/false, and/or/not "
            "or a field entity.Component.field"
        ) from None


class _Parser:
    """or_expr := and_expr ('or' and_expr)*;  and_expr := not_expr ('and' not_expr)*;
    not_expr := 'not' not_expr | comparison;  comparison := operand (op operand)?;
    operand := const | field | '(' or_expr ')'."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def parse(self) -> Expr:
        if self._peek().kind == "end":
            raise ExpressionError("column 1: the condition is empty")
        expr = self._or()
        token = self._peek()
        if token.kind != "end":
            raise ExpressionError(f"column {token.column}: expected and/or, not {token.text!r}")
        return expr

    def _peek(self) -> _Token:
        return self.tokens[self.at]

    def _take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def _or(self) -> Expr:
        return self._chain("or", self._and)

    def _and(self) -> Expr:
        return self._chain("and", self._not)

    def _chain(self, op: str, operand: Callable[[], Expr]) -> Expr:
        operands = [operand()]
        while self._peek().kind == op:
            self._take()
            operands.append(operand())
        return operands[0] if len(operands) == 1 else BoolOp(op, tuple(operands))

    def _not(self) -> Expr:
        if self._peek().kind == "not":
            self._take()
            return Not(self._not())
        return self._comparison()

    def _comparison(self) -> Expr:
        left = self._operand()
        if self._peek().kind != "op":
            return left
        op = self._take()
        right = self._operand()
        if isinstance(left, Compare | Not | BoolOp) or isinstance(right, Compare | Not | BoolOp):
            raise ExpressionError(
                f"column {op.column}: {op.text} compares two values, not conditions"
            )
        if self._peek().kind == "op":
            raise ExpressionError(
                f"column {self._peek().column}: one comparison at a time; join them with and"
            )
        return Compare(left, op.text, right)

    def _operand(self) -> Expr:
        token = self._take()
        if token.kind == "const":
            return Const(token.value, token.column)
        if token.kind == "field":
            return Field(token.value, token.column)
        if token.kind == "(":
            inner = self._or()
            closing = self._take()
            if closing.kind != ")":
                raise ExpressionError(
                    f"column {closing.column}: expected ) to close column {token.column}"
                )
            return inner
        found = "the end" if token.kind == "end" else repr(token.text)
        raise ExpressionError(
            f"column {token.column}: expected a field, a number, true/false or (, not {found}"
        )


def parse(text: str) -> Expr:
    """The syntax tree of a condition; ``ExpressionError`` naming the column otherwise."""
    return _Parser(text).parse()


def fields_of(expr: Expr) -> list[FieldRef]:
    """The fields ``expr`` reads, in the order written, each once."""
    found: list[FieldRef] = []
    _collect(expr, found)
    return list(dict.fromkeys(found))


def _collect(expr: Expr, found: list[FieldRef]) -> None:
    if isinstance(expr, Field):
        found.append(expr.ref)
    elif isinstance(expr, Compare):
        _collect(expr.left, found)
        _collect(expr.right, found)
    elif isinstance(expr, Not):
        _collect(expr.operand, found)
    elif isinstance(expr, BoolOp):
        for operand in expr.operands:
            _collect(operand, found)


# -- compiling ----------------------------------------------------------------------------

Condition = Callable[[], bool]
_Value = Callable[[], Any]


def compile_condition(expr: Expr, fields: FieldIndex) -> Condition:
    """``expr`` as a closure over the components it reads; ``ValueError`` naming the
    field if one is not in the World or holds a value the condition cannot use."""
    return _condition(expr, fields)


def _condition(expr: Expr, fields: FieldIndex) -> Condition:
    if isinstance(expr, BoolOp):
        parts = tuple(_condition(operand, fields) for operand in expr.operands)
        return partial(_any if expr.op == "or" else _all, parts)
    if isinstance(expr, Not):
        return partial(_not, _condition(expr.operand, fields))
    if isinstance(expr, Compare):
        left, left_kind = _value(expr.left, fields)
        right, right_kind = _value(expr.right, fields)
        if expr.op in _ORDERING and "bool" in (left_kind, right_kind):
            raise ValueError(f"{expr.op} orders numbers; a true/false is compared with == or !=")
        if left_kind != right_kind:
            raise ValueError(f"{expr.op} compares a {left_kind} with a {right_kind}")
        return partial(_compare, _COMPARE[expr.op], left, right)
    value, kind = _value(expr, fields)
    if kind != "bool":
        what = expr.ref if isinstance(expr, Field) else expr.value
        raise ValueError(f"{what} is a number, not a condition: compare it (e.g. > 1.5)")
    return value


def _value(expr: Const | Field, fields: FieldIndex) -> tuple[_Value, str]:
    """A closure reading the operand, and the kind of value it gives ("bool", "number")."""
    if isinstance(expr, Const):
        return partial(_constant, expr.value), _kind(expr.value)
    component, problem = fields.find(expr.ref)
    if component is None:
        raise ValueError(f"{expr.ref}: {problem}")
    current = getattr(component, expr.ref.field)
    kind = _kind(current)
    if kind == "":
        raise ValueError(f"{expr.ref} holds {current!r}, not a number or true/false")
    return partial(getattr, component, expr.ref.field), kind


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else ""


def _constant(value: Any) -> Any:
    return value


# Loops rather than any()/all() over a generator: no allocation per tick.
def _any(parts: tuple[Condition, ...]) -> bool:
    for part in parts:  # noqa: SIM110
        if part():
            return True
    return False


def _all(parts: tuple[Condition, ...]) -> bool:
    for part in parts:  # noqa: SIM110
        if not part():
            return False
    return True


def _not(part: Condition) -> bool:
    return not part()


def _compare(op: Callable[[Any, Any], bool], left: _Value, right: _Value) -> bool:
    return op(left(), right())


# -- the block ----------------------------------------------------------------------------


class Interlock:
    """One interlock, wired: trips SafeState cause ``interlock:<name>`` while its
    condition holds (or a field it reads is not of GOOD quality), releases it after."""

    __slots__ = (
        "_bad_detail",
        "_qualities",
        "cause",
        "condition",
        "detail",
        "latched",
        "name",
        "scope",
        "tripped",
    )

    def __init__(
        self,
        name: str,
        text: str,
        fields: FieldIndex,
        *,
        scope: str | None = None,
        latched: bool = False,
    ) -> None:
        expr = parse(text)
        self.name = name
        self.cause = f"interlock:{name}"
        self.condition = compile_condition(expr, fields)
        self.detail = text
        self.scope = scope
        self.latched = latched
        self.tripped = False
        self._qualities: list[tuple[Any, str]] = []
        for ref in fields_of(expr):
            component, _ = fields.find(ref)
            quality = f"{ref.field}_quality"
            if component is not None and quality in type(component).__el_fields__:
                self._qualities.append((component, quality))
        self._bad_detail = f"{text} (a field it reads is not of good quality)"

    def holding(self) -> str | None:
        """Why outputs must be held safe now, or None."""
        for component, quality in self._qualities:
            if getattr(component, quality) != Quality.GOOD:
                return self._bad_detail
        return self.detail if self.condition() else None

    def step(self, world: World, tick: int) -> None:
        detail = self.holding()
        if detail is not None:
            # trip on every change of reason; SafeState counts a change once
            world.resource(SafeState).trip(
                self.cause, detail, tick, scope=self.scope, latched=self.latched
            )
            self.tripped = True
        elif self.tripped:
            world.resource(SafeState).release(self.cause)
            self.tripped = False
