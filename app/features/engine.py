"""Evaluate Qlib expressions over a :class:`~app.data.panel.Panel`, reproducing Qlib 0.9.7's numbers.

Qlib's rolling operators are pandas': the numbers are those of Qlib on pandas 3.1 (what installing pyqlib
0.9.7 resolves today), or on pandas 2.2 with ``pandas_rules="2.2.3"`` (Std/Var/Corr/Cov differ between them).

Each instrument's series is its stored rows ``first..last`` (clipped to the panel); rows outside are NaN
in every result, and windows never reach before the first stored row. Load the panel from the start of the
stored history: Qlib's running statistics (Std, Corr, Slope, ...) depend on all earlier rows.

Precision follows Qlib exactly: fields are float32 and element-wise operators (+ - * / Abs Log Greater
Less Ref Delta Sign comparisons) run in numpy with float32 kept (Python numbers are "weak" scalars under
NEP 50); rolling operators read float64 and return float64, and whatever mixes with a float64 array
becomes float64; each finished column is rounded to float32 once. Comparisons give 1.0/0.0 (0 when either
side is NaN), as Qlib's booleans do once a rolling operator reads them.

Shared sub-expressions are computed once per call (keyed by their canonical text) and released as soon
as their last consumer has run, so memory stays near the number of live intermediates.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from app.core.errors import ConfigError, ExpressionError
from app.data.panel import Panel
from app.features import fit_kernels as fk
from app.features import kernels as k
from app.features import order_kernels as ok
from app.features.parser import Call, Const, Field, Node, field_names, parse, walk

log = logging.getLogger(__name__)

Value = Any  # np.ndarray, or a Python number for constants
THRESHOLD = 2e-5
"""Qlib sets Rsquare/Corr to NaN where the rolling std of an input is within this of 0 (``np.isclose``)."""

_ARITH: dict[str, Callable[..., Any]] = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
    "Greater": np.maximum,
    "Less": np.minimum,
}
_COMPARE: dict[str, Callable[..., Any]] = {
    "Gt": np.greater,
    "Ge": np.greater_equal,
    "Lt": np.less,
    "Le": np.less_equal,
    "Eq": np.equal,
    "Ne": np.not_equal,
}


def required_fields(expressions: Mapping[str, str]) -> set[str]:
    """Field names (lower-case, without ``$``) that ``expressions`` read.

    Raises:
        ExpressionError: an expression does not parse.
    """
    names: set[str] = set()
    for text in expressions.values():
        names |= field_names(parse(text))
    return names


def evaluate(panel: Panel, expressions: Mapping[str, str], *, pandas_rules: str = "3.1.1") -> dict[str, np.ndarray]:
    """Compute ``{name: expression}`` on ``panel``: float32 ``[dates × instruments]`` arrays (column-major).

    ``pandas_rules`` picks whose rolling Std/Var/Corr/Cov to reproduce: ``"3.1.1"`` (what
    ``pip install pyqlib==0.9.7`` installs today) or ``"2.2.3"``; every other operator is the same under both.

    Raises:
        ExpressionError: an expression does not parse, or reads a field the panel does not hold.
        ConfigError: ``pandas_rules`` is not one of those.
    """
    if pandas_rules not in k.RULES:
        raise ConfigError(f"pandas_rules must be one of {', '.join(map(repr, k.RULES))}, not {pandas_rules!r}")
    roots = {name: parse(text) for name, text in expressions.items()}
    fields = {f.lower(): f for f in panel.values}
    for name, root in roots.items():
        for node in walk(root):
            if isinstance(node, Field) and node.name not in fields:
                have = ", ".join(f"${f}" for f in panel.values) or "no fields"
                raise ExpressionError(
                    expressions[name],
                    f"unknown field ${node.name} in feature {name!r}: the panel holds {have}. "
                    "Load the field with the panel, or fix the name.",
                    node.pos,
                )
    t = len(panel.dates)
    lo = np.clip(np.asarray(panel.first, dtype=np.int64), 0, t)
    hi = np.clip(np.asarray(panel.last, dtype=np.int64), -1, t - 1)
    run = _Evaluation({f: panel.values[orig] for f, orig in fields.items()}, lo, hi, k.RULES[pandas_rules])
    return run.outputs(roots)


def dependencies(node: Call) -> list[Node]:
    """The sub-expressions whose values computing ``node`` reads (Rsquare and Corr also read Std thresholds)."""
    deps: list[Node] = [a for a in node.args if not isinstance(a, Const)]
    if node.op == "Rsquare":
        deps.append(Call("Std", node.args))
    elif node.op == "Corr":
        left, right, n = node.args
        deps += [Call("Std", (left, n)), Call("Std", (right, n))]
    return deps


class _Evaluation:
    """One :func:`evaluate` call: the memo of live values and how many consumers each still has."""

    def __init__(self, fields: dict[str, np.ndarray], lo: np.ndarray, hi: np.ndarray, rules: int) -> None:
        self.fields = fields
        self.lo = lo
        self.hi = hi
        self.rules = rules
        self.memo: dict[str, Value] = {}
        self.uses: Counter[str] = Counter()

    def outputs(self, roots: Mapping[str, Node]) -> dict[str, np.ndarray]:
        self._count_uses(list(roots.values()))
        log.debug("evaluating %d expressions as %d distinct sub-expressions", len(roots), len(self.uses))
        result: dict[str, np.ndarray] = {}
        with np.errstate(all="ignore"):
            for name, root in roots.items():
                value = self._value(root)
                owned = isinstance(root, Call) and self.uses[root.canonical] == 1
                result[name] = np.asarray(value).astype(np.float32, order="F", copy=not owned)
                self._release(root.canonical)
        return result

    def _count_uses(self, roots: list[Node]) -> None:
        seen: set[str] = set()
        stack = list(roots)
        for root in roots:
            self.uses[root.canonical] += 1
        while stack:
            node = stack.pop()
            if node.canonical in seen:
                continue
            seen.add(node.canonical)
            if isinstance(node, Call):
                for dep in dependencies(node):
                    self.uses[dep.canonical] += 1
                    stack.append(dep)

    def _release(self, key: str) -> None:
        self.uses[key] -= 1
        if self.uses[key] <= 0:
            self.memo.pop(key, None)

    def _value(self, node: Node) -> Value:
        if isinstance(node, Const):
            return node.value
        key = node.canonical
        if key in self.memo:
            return self.memo[key]
        if isinstance(node, Field):
            value: Value = self.fields[node.name]
        else:
            deps = dependencies(node)
            for dep in deps:
                self._value(dep)
            value = self._compute(node)
            for dep in deps:
                self._release(dep.canonical)
        self.memo[key] = value
        return value

    def _arg(self, node: Node) -> Value:
        return node.value if isinstance(node, Const) else self.memo[node.canonical]

    def _series(self, node: Node) -> np.ndarray:
        """A rolling operator's input: float32/float64 as is (kernels read float64), anything else as float64."""
        arr = np.asfortranarray(self._arg(node))
        return arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float64, order="F")

    def _masked(self, arr: np.ndarray) -> np.ndarray:
        """``arr`` with rows outside each instrument's series set to NaN (for ops that turn NaN into numbers)."""
        arr = np.asfortranarray(arr, dtype=np.float32) if arr.dtype == np.bool_ else np.asfortranarray(arr)
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64, order="F")
        k.mask_outside(arr, self.lo, self.hi)
        return arr

    def _compute(self, node: Call) -> Value:
        op, args = node.op, node.args
        if op in _ARITH:
            return _ARITH[op](self._arg(args[0]), self._arg(args[1]))
        if op in _COMPARE:
            return self._masked(_COMPARE[op](self._arg(args[0]), self._arg(args[1])))
        if op == "Power":
            return self._masked(np.power(self._arg(args[0]), self._arg(args[1])))
        if op in ("And", "Or"):
            a, b = (np.not_equal(self._arg(x), 0) for x in args)
            return self._masked(np.logical_and(a, b) if op == "And" else np.logical_or(a, b))
        if op == "Not":
            return self._masked(np.equal(self._arg(args[0]), 0))
        if op == "If":
            cond = np.not_equal(self._arg(args[0]), 0)
            return self._masked(np.asarray(np.where(cond, self._arg(args[1]), self._arg(args[2]))))
        if op == "Abs":
            return np.abs(self._arg(args[0]))
        if op == "Log":
            return np.log(self._arg(args[0]))
        if op == "Sign":  # Qlib casts to float32 first
            return np.sign(np.asarray(self._arg(args[0])).astype(np.float32))
        if op in ("Ref", "Delta"):
            x = np.asfortranarray(self._arg(args[0]))
            if not np.issubdtype(x.dtype, np.floating):
                x = x.astype(np.float64, order="F")
            shifted = k.shift(x, self.lo, self.hi, int(self._arg(args[1])))
            return shifted if op == "Ref" else np.subtract(x, shifted)
        return self._rolling(node)

    def _rolling(self, node: Call) -> np.ndarray:
        op, args = node.op, node.args
        lo, hi = self.lo, self.hi
        if op in ("Corr", "Cov"):
            n = int(self._arg(args[2]))
            a, b = self._series(args[0]), self._series(args[1])
            corr_cov = k.roll_corr_cov_2_2 if self.rules == k.PANDAS_2_2 else k.roll_corr_cov
            out: np.ndarray = corr_cov(a, b, lo, hi, n, op == "Corr")
            if op == "Corr":
                flat = (self.memo[Call("Std", (args[0], args[2])).canonical] <= THRESHOLD) | (
                    self.memo[Call("Std", (args[1], args[2])).canonical] <= THRESHOLD
                )
                out[flat] = np.nan
            return out
        x = self._series(args[0])
        if op == "EMA":
            span = self._arg(args[1])
            com = (1 - span) / span if isinstance(span, float) else (span - 1) / 2
            return k.ewm_mean(x, lo, hi, float(com))
        n = int(self._arg(args[1]))
        if op == "Rsquare":
            out = fk.roll_regression(x, lo, hi, n, fk.RSQUARE)
            out[self.memo[Call("Std", args).canonical] <= THRESHOLD] = np.nan
            return out
        kernel = _ROLLING_KERNELS[op]
        if op in ("Std", "Var"):
            return kernel(x, lo, hi, n, self.rules)  # type: ignore[no-any-return]
        if op == "Quantile":
            return kernel(x, lo, hi, n, float(self._arg(args[2])))  # type: ignore[no-any-return]
        return kernel(x, lo, hi, n)  # type: ignore[no-any-return]


_ROLLING_KERNELS: dict[str, Callable[..., Any]] = {
    "Mean": lambda x, lo, hi, n: k.roll_mean_sum(x, lo, hi, n, False),
    "Sum": lambda x, lo, hi, n: k.roll_mean_sum(x, lo, hi, n, True),
    "Std": lambda x, lo, hi, n, rules: k.roll_var(x, lo, hi, n, 1, True, rules),
    "Var": lambda x, lo, hi, n, rules: k.roll_var(x, lo, hi, n, 1, False, rules),
    "Count": k.roll_count,
    "Max": lambda x, lo, hi, n: ok.roll_max_min(x, lo, hi, n, True),
    "Min": lambda x, lo, hi, n: ok.roll_max_min(x, lo, hi, n, False),
    "Med": lambda x, lo, hi, n: ok.roll_quantile(x, lo, hi, n, 0.5, True),
    "Quantile": lambda x, lo, hi, n, q: ok.roll_quantile(x, lo, hi, n, q, False),
    "Rank": ok.roll_rank,
    "IdxMax": lambda x, lo, hi, n: ok.roll_argext(x, lo, hi, n, True),
    "IdxMin": lambda x, lo, hi, n: ok.roll_argext(x, lo, hi, n, False),
    "Slope": lambda x, lo, hi, n: fk.roll_regression(x, lo, hi, n, fk.SLOPE),
    "Resi": lambda x, lo, hi, n: fk.roll_regression(x, lo, hi, n, fk.RESI),
    "WMA": fk.roll_wma,
    "Mad": fk.roll_mad,
}
