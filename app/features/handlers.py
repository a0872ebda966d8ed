"""Feature libraries as Qlib defines them: Alpha158, Alpha360, the default label, custom expressions.

Each builds a :class:`FeatureSet`: ordered ``(name, expression)`` pairs for features and labels, with Qlib's
column names and expression strings (the strings matter: they fix the float32/float64 evaluation order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.core.errors import ConfigError, ExpressionError

PANDAS_RULES = ("3.1.1", "2.2.3")
"""Whose rolling Std/Var/Corr/Cov a feature set reproduces: Qlib on pandas 3.1.1 (the default; 3.1.0 computes the
same) or on pandas 2.2.3. pandas 3.0.x is neither (its Std is 3.1's, its Corr/Cov 2.2's formula)."""
DEFAULT_LABEL: tuple[tuple[str, str], ...] = (("LABEL0", "Ref($close, -2)/Ref($close, -1) - 1"),)
ROLLING_WINDOWS = (5, 10, 20, 30, 60)
# Operator-major order of Alpha158's rolling block; MIN is switched by "LOW" in Qlib's include/exclude lists.
ROLLING_OPERATORS = (
    "ROC", "MA", "STD", "BETA", "RSQR", "RESI", "MAX", "MIN", "QTLU", "QTLD", "RANK", "RSV", "IMAX", "IMIN", "IMXD",
    "CORR", "CORD", "CNTP", "CNTN", "CNTD", "SUMP", "SUMN", "SUMD", "VMA", "VSTD", "WVMA", "VSUMP", "VSUMN", "VSUMD",
)  # fmt: skip
GRU20_COLUMNS = (
    "RESI5", "WVMA5", "RSQR5", "KLEN", "RSQR10", "CORR5", "CORD5", "CORR10", "ROC60", "RESI10",
    "VSTD5", "RSQR60", "CORR60", "WVMA60", "STD5", "RSQR20", "CORD60", "CORD10", "CORR20", "KLOW",
)  # fmt: skip

_KBAR = (
    ("KMID", "($close-$open)/$open"),
    ("KLEN", "($high-$low)/$open"),
    ("KMID2", "($close-$open)/($high-$low+1e-12)"),
    ("KUP", "($high-Greater($open, $close))/$open"),
    ("KUP2", "($high-Greater($open, $close))/($high-$low+1e-12)"),
    ("KLOW", "(Less($open, $close)-$low)/$open"),
    ("KLOW2", "(Less($open, $close)-$low)/($high-$low+1e-12)"),
    ("KSFT", "(2*$close-$high-$low)/$open"),
    ("KSFT2", "(2*$close-$high-$low)/($high-$low+1e-12)"),
)

_D = "$close-Ref($close, 1)"
_DN = "Ref($close, 1)-$close"
_V = "$volume-Ref($volume, 1)"
_VN = "Ref($volume, 1)-$volume"
_ROLLING: dict[str, str] = {
    "ROC": "Ref($close, {d})/$close",
    "MA": "Mean($close, {d})/$close",
    "STD": "Std($close, {d})/$close",
    "BETA": "Slope($close, {d})/$close",
    "RSQR": "Rsquare($close, {d})",
    "RESI": "Resi($close, {d})/$close",
    "MAX": "Max($high, {d})/$close",
    "MIN": "Min($low, {d})/$close",
    "QTLU": "Quantile($close, {d}, 0.8)/$close",
    "QTLD": "Quantile($close, {d}, 0.2)/$close",
    "RANK": "Rank($close, {d})",
    "RSV": "($close-Min($low, {d}))/(Max($high, {d})-Min($low, {d})+1e-12)",
    "IMAX": "IdxMax($high, {d})/{d}",
    "IMIN": "IdxMin($low, {d})/{d}",
    "IMXD": "(IdxMax($high, {d})-IdxMin($low, {d}))/{d}",
    "CORR": "Corr($close, Log($volume+1), {d})",
    "CORD": "Corr($close/Ref($close,1), Log($volume/Ref($volume, 1)+1), {d})",
    "CNTP": "Mean($close>Ref($close, 1), {d})",
    "CNTN": "Mean($close<Ref($close, 1), {d})",
    "CNTD": "Mean($close>Ref($close, 1), {d})-Mean($close<Ref($close, 1), {d})",
    "SUMP": f"Sum(Greater({_D}, 0), {{d}})/(Sum(Abs({_D}), {{d}})+1e-12)",
    "SUMN": f"Sum(Greater({_DN}, 0), {{d}})/(Sum(Abs({_D}), {{d}})+1e-12)",
    "SUMD": f"(Sum(Greater({_D}, 0), {{d}})-Sum(Greater({_DN}, 0), {{d}}))/(Sum(Abs({_D}), {{d}})+1e-12)",
    "VMA": "Mean($volume, {d})/($volume+1e-12)",
    "VSTD": "Std($volume, {d})/($volume+1e-12)",
    "WVMA": "Std(Abs($close/Ref($close, 1)-1)*$volume, {d})/(Mean(Abs($close/Ref($close, 1)-1)*$volume, {d})+1e-12)",
    "VSUMP": f"Sum(Greater({_V}, 0), {{d}})/(Sum(Abs({_V}), {{d}})+1e-12)",
    "VSUMN": f"Sum(Greater({_VN}, 0), {{d}})/(Sum(Abs({_V}), {{d}})+1e-12)",
    "VSUMD": f"(Sum(Greater({_V}, 0), {{d}})-Sum(Greater({_VN}, 0), {{d}}))/(Sum(Abs({_V}), {{d}})+1e-12)",
}


@dataclass(frozen=True)
class FeatureSet:
    """Ordered feature and label expressions; names are the output column names.

    ``pandas_rules`` (one of :data:`PANDAS_RULES`) picks the pandas version whose rolling algorithms the
    numbers follow: ``"3.1.1"`` is Qlib as ``pip install pyqlib==0.9.7`` installs it today; ``"2.2.3"`` matches
    a Qlib install on pandas 2.2 (flat windows have a standard deviation of exactly 0 there, and Corr/Cov are
    computed from rolling means).
    """

    features: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...] = DEFAULT_LABEL
    pandas_rules: str = "3.1.1"

    def __post_init__(self) -> None:
        if self.pandas_rules not in PANDAS_RULES:
            raise ConfigError(
                f"pandas_rules must be one of {', '.join(map(repr, PANDAS_RULES))} (the pandas version whose "
                f"rolling algorithms to reproduce), not {self.pandas_rules!r}"
            )
        names = [n for n, _ in (*self.features, *self.labels)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"feature names must be unique; repeated: {', '.join(dupes)}")
        if not self.features:
            raise ConfigError("a feature set needs at least one feature expression")
        from app.features.parser import parse  # light; numba-backed evaluation is imported only to compute

        for name, expression in (*self.features, *self.labels):
            try:
                parse(expression)
            except ExpressionError as exc:
                raise ExpressionError(exc.expression, f"(column {name}) {str(exc).split(': ', 1)[1]}") from exc

    @property
    def feature_names(self) -> list[str]:
        return [n for n, _ in self.features]

    @property
    def label_names(self) -> list[str]:
        return [n for n, _ in self.labels]

    def select(self, columns: Sequence[str]) -> FeatureSet:
        """Keep only ``columns`` (in the given order), e.g. the GRU benchmark's 20 columns.

        Raises:
            ConfigError: a column is not in the set.
        """
        table = dict(self.features)
        missing = [c for c in columns if c not in table]
        if missing:
            raise ConfigError(
                f"unknown feature column(s) {', '.join(missing)}; this feature set has "
                f"{len(table)} columns ({', '.join(list(table)[:8])}, ...)"
            )
        return FeatureSet(tuple((c, table[c]) for c in columns), self.labels, self.pandas_rules)


def _labels(label: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return DEFAULT_LABEL if label is None else tuple(label.items())


def alpha158(
    *,
    kbar: bool = True,
    price_windows: Sequence[int] = (0,),
    price_fields: Sequence[str] = ("OPEN", "HIGH", "LOW", "VWAP"),
    volume_windows: Sequence[int] = (),
    rolling_windows: Sequence[int] = ROLLING_WINDOWS,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    columns: Sequence[str] | None = None,
    label: Mapping[str, str] | None = None,
    pandas_rules: str = "3.1.1",
) -> FeatureSet:
    """Qlib's Alpha158 (158 columns with the defaults), configurable as Qlib's loader config is.

    ``include``/``exclude`` name rolling operators (``LOW`` switches ``MIN``, as in Qlib); ``columns`` keeps
    a subset in that order (e.g. :data:`GRU20_COLUMNS`); ``label`` maps names to label expressions;
    ``pandas_rules``: see :class:`FeatureSet`.

    Raises:
        ConfigError: unknown operator names in include/exclude, unknown columns.
    """
    known = set(ROLLING_OPERATORS) | {"LOW"}
    unknown = sorted(set(include or ()) - known | set(exclude) - known)
    if unknown:
        raise ConfigError(
            f"alpha158 include/exclude: unknown rolling operator(s) {', '.join(unknown)}; "
            f"known: {', '.join(ROLLING_OPERATORS)}"
        )
    features: list[tuple[str, str]] = list(_KBAR) if kbar else []
    for field in price_fields:
        f = field.lower()
        features += [(f"{field.upper()}{d}", f"Ref(${f}, {d})/$close" if d else f"${f}/$close") for d in price_windows]
    features += [
        (f"VOLUME{d}", f"Ref($volume, {d})/($volume+1e-12)" if d else "$volume/($volume+1e-12)") for d in volume_windows
    ]

    def use(op: str) -> bool:
        switch = "LOW" if op == "MIN" else op
        return switch not in exclude and (include is None or switch in include)

    for op in ROLLING_OPERATORS:
        if use(op):
            features += [(f"{op}{d}", _ROLLING[op].format(d=d)) for d in rolling_windows]
    result = FeatureSet(tuple(features), _labels(label), pandas_rules)
    return result.select(columns) if columns is not None else result


def alpha360(*, label: Mapping[str, str] | None = None, pandas_rules: str = "3.1.1") -> FeatureSet:
    """Qlib's Alpha360: 60 days of close/open/high/low/vwap over today's close, and volume over today's volume.

    It has no rolling statistics, so ``pandas_rules`` (see :class:`FeatureSet`) only matters to its label.
    """
    features: list[tuple[str, str]] = []
    for field in ("close", "open", "high", "low", "vwap"):
        features += [(f"{field.upper()}{i}", f"Ref(${field}, {i})/$close") for i in range(59, 0, -1)]
        features.append((f"{field.upper()}0", f"${field}/$close"))
    features += [(f"VOLUME{i}", f"Ref($volume, {i})/($volume+1e-12)") for i in range(59, 0, -1)]
    features.append(("VOLUME0", "$volume/($volume+1e-12)"))
    return FeatureSet(tuple(features), _labels(label), pandas_rules)


def expressions(
    *, features: Mapping[str, str], label: Mapping[str, str] | None = None, pandas_rules: str = "3.1.1"
) -> FeatureSet:
    """A feature set from user expressions, e.g. ``{"MOM5": "Ref($close, 5)/$close"}`` (``pandas_rules``: see
    :class:`FeatureSet`)."""
    return FeatureSet(tuple(features.items()), _labels(label), pandas_rules)
