"""Parse Qlib expression strings (``"Mean($close, 5)/$close"``) into immutable expression trees.

Qlib evaluates these strings as Python after rewriting ``$x`` to ``Feature("x")`` and ``Name(`` to an
operator call, so the grammar here is Python's for that subset: numbers, ``$field`` references, operator
calls ``Name(arg, ...)``, infix ``+ - * / ** > < >= <= == != & |``, unary minus and parentheses, with
Python's precedence (``&``/``|`` bind tighter than comparisons; ``-2**2`` is ``-(2**2)``). Infix operators
become Qlib's operator names (``$a+$b`` is ``Add($a,$b)``), so :attr:`Node.canonical` is Qlib's own
``str(expression)`` and a stable key for sharing sub-expressions and for caches. Constant-only
arithmetic is folded as Python folds it, and a unary minus on an expression becomes ``Mul(-1,x)``
(Qlib's ``Expression`` has no negation; ``-1*x`` is exact in every dtype).
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NoReturn

from app.core.errors import ExpressionError

# parameter kinds: x = an expression over fields; v = expression or number; window = int >= 1;
# shift = any int; lag = int >= 0; span = int >= 1 or float in (0, 1); q = float in (0, 1)
_ELEMENTWISE_1 = ("Abs", "Sign", "Log", "Not")
_ELEMENTWISE_2 = (
    "Add", "Sub", "Mul", "Div", "Power", "Greater", "Less", "Gt", "Ge", "Lt", "Le", "Eq", "Ne", "And", "Or",
)  # fmt: skip
_ROLLING = (
    "Mean", "Sum", "Std", "Var", "Max", "Min", "Med", "Mad", "Rank", "Count", "Slope", "Rsquare", "Resi",
    "IdxMax", "IdxMin", "WMA",
)  # fmt: skip

OPERATORS: dict[str, tuple[str, ...]] = {
    **{name: ("x",) for name in _ELEMENTWISE_1},
    **{name: ("v", "v") for name in _ELEMENTWISE_2},
    **{name: ("x", "window") for name in _ROLLING},
    "If": ("x", "v", "v"),
    "Ref": ("x", "shift"),
    "Delta": ("x", "lag"),
    "EMA": ("x", "span"),
    "Quantile": ("x", "window", "q"),
    "Corr": ("x", "x", "window"),
    "Cov": ("x", "x", "window"),
}
"""Supported operators and their parameter kinds, by Qlib name."""

UNSUPPORTED_QLIB_OPERATORS = frozenset({"ChangeInstrument", "Skew", "Kurt", "Mask", "TResample", "P", "PRef"})

_INFIX = {"+": "Add", "-": "Sub", "*": "Mul", "/": "Div", "**": "Power", "&": "And", "|": "Or"}
_COMPARE = {">": "Gt", "<": "Lt", ">=": "Ge", "<=": "Le", "==": "Eq", "!=": "Ne"}
_PARAM_NAME = {"x": "feature", "v": "feature or number", "q": "qscore"} | dict.fromkeys(
    ["window", "shift", "lag", "span"], "N"
)
_FOLD: dict[str, Callable[[Any, Any], Any]] = {
    "Add": operator.add,
    "Sub": operator.sub,
    "Mul": operator.mul,
    "Div": operator.truediv,
    "Power": operator.pow,
    "Gt": operator.gt,
    "Lt": operator.lt,
    "Ge": operator.ge,
    "Le": operator.le,
    "Eq": operator.eq,
    "Ne": operator.ne,
    "And": operator.and_,
    "Or": operator.or_,
}
_KIND_TEXT = {
    "window": "a whole number >= 1 (the window length)",
    "shift": "a whole number (rows back; negative looks ahead)",
    "lag": "a whole number >= 0",
    "span": "a whole number >= 1 or a fraction in (0, 1)",
    "q": "a fraction in (0, 1)",
}
_TOKEN = re.compile(
    r"(?P<ws>\s+)|(?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)|(?P<pfield>\$\$\w+)|(?P<field>\$\w+)"
    r"|(?P<name>[^\W\d]\w*)|(?P<op>\*\*|>=|<=|==|!=|[-+*/<>&|(),])"
)


@dataclass(frozen=True)
class Field:
    """A ``$name`` reference to a stored field (names are case-insensitive, as Qlib's file lookup is)."""

    name: str
    pos: int = field(default=0, compare=False)

    @cached_property
    def canonical(self) -> str:
        return "$" + self.name


@dataclass(frozen=True)
class Const:
    """A number; an ``int`` where the text had no decimal point or exponent."""

    value: int | float
    pos: int = field(default=0, compare=False)

    @cached_property
    def canonical(self) -> str:
        return repr(self.value)


@dataclass(frozen=True)
class Call:
    """An operator applied to arguments (infix operators included, under their Qlib names)."""

    op: str
    args: tuple[Node, ...]
    pos: int = field(default=0, compare=False)

    @cached_property
    def canonical(self) -> str:
        return f"{self.op}({','.join(a.canonical for a in self.args)})"


Node = Field | Const | Call


def parse(expression: str) -> Node:
    """Parse one Qlib expression string.

    Raises:
        ExpressionError: a syntax error, an unknown or unsupported operator, a wrong number or kind of
            arguments, or an expression without any ``$field``.
    """
    node = _Parser(expression).parse()
    if isinstance(node, Const):
        raise ExpressionError(expression, "the expression has no $field; a feature must read at least one", 0)
    return node


def field_names(node: Node) -> set[str]:
    """The field names (without ``$``) that ``node`` reads."""
    return {n.name for n in walk(node) if isinstance(n, Field)}


def walk(node: Node) -> Iterator[Node]:
    """``node`` and all its sub-expressions, parents before children."""
    yield node
    if isinstance(node, Call):
        for arg in node.args:
            yield from walk(arg)


@dataclass(frozen=True)
class _Tok:
    kind: str  # num, field, name, op, end
    text: str
    pos: int


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = self._tokenize()
        self.i = 0

    def _tokenize(self) -> list[_Tok]:
        toks: list[_Tok] = []
        pos = 0
        while pos < len(self.text):
            m = _TOKEN.match(self.text, pos)
            if m is None:
                ch = self.text[pos]
                hint = "a field name after '$' (e.g. $close)" if ch == "$" else "an operator, number, $field or name"
                self._fail(f"unexpected character {ch!r}; expected {hint}", pos)
            kind = m.lastgroup or ""
            if kind == "pfield":
                self._fail("point-in-time fields ($$name) are not supported; use a daily $field", pos)
            if kind != "ws":
                toks.append(_Tok(kind, m.group(), pos))
            pos = m.end()
        toks.append(_Tok("end", "", len(self.text)))
        return toks

    def _fail(self, message: str, pos: int) -> NoReturn:
        raise ExpressionError(self.text, f"syntax error at position {pos}: {message}", pos)

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def _next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def _is(self, *texts: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in texts

    def _expect(self, text: str, wanted: str) -> None:
        if not self._is(text):
            self._fail(f"expected {wanted}", self.tok.pos)
        self.i += 1

    def parse(self) -> Node:
        node = self._comparison()
        if self.tok.kind != "end":
            self._fail(f"unexpected {self.tok.text!r} after a complete expression", self.tok.pos)
        return node

    def _comparison(self) -> Node:
        left = self._binary(0)
        if self._is(*_COMPARE):
            op = self._next()
            right = self._binary(0)
            if self._is(*_COMPARE):
                self._fail(
                    "comparisons cannot be chained; '&' and '|' bind tighter than comparisons (Python "
                    "precedence), so write (a > b) & (c > d)",
                    self.tok.pos,
                )
            left = self._combine(_COMPARE[op.text], left, right, op.pos)
        return left

    # precedence levels, loosest first: | then & then + - then * /
    _LEVELS = (("|",), ("&",), ("+", "-"), ("*", "/"))

    def _binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self._unary()
        left = self._binary(level + 1)
        while self._is(*self._LEVELS[level]):
            op = self._next()
            right = self._binary(level + 1)
            left = self._combine(_INFIX[op.text], left, right, op.pos)
        return left

    def _unary(self) -> Node:
        if self._is("-", "+"):
            op = self._next()
            operand = self._unary()
            if op.text == "+":
                return operand
            if isinstance(operand, Const):
                return Const(-operand.value, op.pos)
            return Call("Mul", (Const(-1, op.pos), operand), op.pos)
        return self._power()

    def _power(self) -> Node:
        base = self._atom()
        if self._is("**"):
            op = self._next()
            return self._combine("Power", base, self._unary(), op.pos)
        return base

    def _atom(self) -> Node:
        tok = self._next()
        if tok.kind == "num":
            is_int = not any(c in tok.text for c in ".eE")
            return Const(int(tok.text) if is_int else float(tok.text), tok.pos)
        if tok.kind == "field":
            return Field(tok.text[1:].lower(), tok.pos)
        if tok.kind == "name":
            if not self._is("("):
                self._fail(f"{tok.text!r} is neither a $field nor an operator call; fields start with '$'", tok.pos)
            self.i += 1
            args: list[Node] = []
            if not self._is(")"):
                args.append(self._comparison())
                while self._is(","):
                    self.i += 1
                    args.append(self._comparison())
            self._expect(")", "',' or ')'")
            return self._call(tok.text, tuple(args), tok.pos)
        if tok.kind == "op" and tok.text == "(":
            inner = self._comparison()
            self._expect(")", "')'")
            return inner
        what = "the end of the expression" if tok.kind == "end" else repr(tok.text)
        self._fail(f"expected a number, $field, operator call or '(' but found {what}", tok.pos)

    def _combine(self, op: str, left: Node, right: Node, pos: int) -> Node:
        if isinstance(left, Const) and isinstance(right, Const):
            return Const(self._fold(op, left.value, right.value, pos), left.pos)
        return Call(op, (left, right), pos)

    def _fold(self, op: str, a: int | float, b: int | float, pos: int) -> int | float:
        try:
            result = _FOLD[op](a, b)
        except (ArithmeticError, TypeError) as exc:
            raise ExpressionError(self.text, f"cannot compute the constant {op}({a}, {b}): {exc}", pos) from None
        if isinstance(result, complex):
            raise ExpressionError(self.text, f"the constant {op}({a}, {b}) is not a real number", pos)
        return int(result) if isinstance(result, bool) else result

    def _call(self, name: str, args: tuple[Node, ...], pos: int) -> Node:
        params = OPERATORS.get(name)
        if params is None:
            self._unknown_operator(name, pos)
        if len(args) != len(params):
            shown = ", ".join(_PARAM_NAME[p] for p in params)
            raise ExpressionError(self.text, f"{name} takes {len(params)} arguments ({shown}), got {len(args)}", pos)
        if all(isinstance(a, Const) for a in args):
            raise ExpressionError(self.text, f"{name}(...) has only numbers as arguments; it needs a $field", pos)
        for k, (kind, arg) in enumerate(zip(params, args, strict=True), start=1):
            self._check_arg(name, k, kind, arg)
        return Call(name, args, pos)

    def _check_arg(self, name: str, k: int, kind: str, arg: Node) -> None:
        if kind == "v":
            return
        if kind == "x":
            if isinstance(arg, Const):
                raise ExpressionError(
                    self.text,
                    f"argument {k} of {name} must be an expression over fields, got the number {arg.value}",
                    arg.pos,
                )
            return
        value = arg.value if isinstance(arg, Const) else None
        is_int = isinstance(value, int)
        ok = {
            "window": is_int and value is not None and value >= 1,
            "shift": is_int,
            "lag": is_int and value is not None and value >= 0,
            "span": value is not None and ((is_int and value >= 1) or (isinstance(value, float) and 0 < value < 1)),
            "q": isinstance(value, float) and 0 < value < 1,
        }[kind]
        if not ok:
            got = arg.canonical if value is None else repr(value)
            hint = " (window 0, Qlib's expanding mode, is not supported)" if value == 0 and kind == "window" else ""
            raise ExpressionError(
                self.text, f"argument {k} of {name} must be {_KIND_TEXT[kind]}, got {got}{hint}", arg.pos
            )

    def _unknown_operator(self, name: str, pos: int) -> NoReturn:
        if name in UNSUPPORTED_QLIB_OPERATORS:
            raise ExpressionError(self.text, f"Qlib operator {name!r} is not supported by qtrain", pos)
        by_lower = {k.lower(): k for k in OPERATORS}
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
        suggestion = f" (did you mean {' or '.join(by_lower[c] for c in close)}?)" if close else ""
        known = ", ".join(sorted(OPERATORS))
        raise ExpressionError(self.text, f"unknown operator {name!r}{suggestion}. Known operators: {known}", pos)
