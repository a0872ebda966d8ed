"""Parsing Qlib expression strings: canonical forms, precedence, constants and error messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.errors import ConfigError, ExpressionError
from app.features import OPERATORS, Call, Const, Field, parse
from app.features.parser import field_names


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("$close", "$close"),
        ("$Close", "$close"),
        ("Mean($close, 5)/$close", "Div(Mean($close,5),$close)"),
        ("($close-$open)/($high-$low+1e-12)", "Div(Sub($close,$open),Add(Sub($high,$low),1e-12))"),
        ("2*$close-$high-$low", "Sub(Sub(Mul(2,$close),$high),$low)"),
        ("Quantile($close, 5, 0.8)", "Quantile($close,5,0.8)"),
        ("Ref($close, -2)/Ref($close, -1) - 1", "Sub(Div(Ref($close,-2),Ref($close,-1)),1)"),
        ("Mean($close>Ref($close, 1), 5)", "Mean(Gt($close,Ref($close,1)),5)"),
        ("Corr($close, Log($volume+1), 10)", "Corr($close,Log(Add($volume,1)),10)"),
        ("$a >= $b", "Ge($a,$b)"),
        ("$a <= $b", "Le($a,$b)"),
        ("$a == $b", "Eq($a,$b)"),
        ("$a != $b", "Ne($a,$b)"),
        ("$a < $b", "Lt($a,$b)"),
        ("($a > $b) & ($c < $d)", "And(Gt($a,$b),Lt($c,$d))"),
        ("($a > $b) | ($c < $d)", "Or(Gt($a,$b),Lt($c,$d))"),
        ("$a ** 2", "Power($a,2)"),
        ("Sum(Greater($close-Ref($close, 1), 0), 5)", "Sum(Greater(Sub($close,Ref($close,1)),0),5)"),
        ("EMA($close, 0.3)", "EMA($close,0.3)"),
        ("  Std( $close ,\t20 )  ", "Std($close,20)"),
    ],
)
def test_canonical_form_is_qlibs_str(text: str, canonical: str) -> None:
    assert parse(text).canonical == canonical


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("$a + $b * $c", "Add($a,Mul($b,$c))"),
        ("$a - $b - $c", "Sub(Sub($a,$b),$c)"),
        ("$a / $b / $c", "Div(Div($a,$b),$c)"),
        ("($a + $b) * $c", "Mul(Add($a,$b),$c)"),
        ("$a > $b + 1", "Gt($a,Add($b,1))"),
        ("$a & $b | $c", "Or(And($a,$b),$c)"),  # & binds tighter than |
        ("$a > $b & $c", "Gt($a,And($b,$c))"),  # and both tighter than comparisons, as in Python
        ("-$a ** 2", "Mul(-1,Power($a,2))"),
        ("$a ** -1", "Power($a,-1)"),
        ("$a ** 2 ** 3", "Power($a,8)"),  # right-associative; the constant part folds
        ("-2 ** 2 * $a", "Mul(-4,$a)"),
        ("+$a", "$a"),
        ("- -$a", "Mul(-1,Mul(-1,$a))"),
    ],
)
def test_python_precedence(text: str, canonical: str) -> None:
    assert parse(text).canonical == canonical


def test_numbers_keep_int_float_and_scientific_forms() -> None:
    node = parse("Ref($x, 3) + 1e-12 + 2.5 + .5 + 7.")
    consts = [n.value for n in _consts(node)]
    assert consts == [3, 1e-12, 2.5, 0.5, 7.0]
    assert isinstance(consts[0], int) and isinstance(consts[-1], float)


def test_constant_arithmetic_folds_like_python() -> None:
    assert parse("$a * (1 + 2)").canonical == "Mul($a,3)"
    assert parse("$a * (1 / 4)").canonical == "Mul($a,0.25)"
    assert parse("$a + (2 > 1)").canonical == "Add($a,1)"
    assert parse("Ref($a, -(1 + 1))").canonical == "Ref($a,-2)"


def test_nodes_are_values_and_share_canonical_keys() -> None:
    a = parse("Mean($close, 5)")
    b = parse("Mean( $close,5 )")
    assert a == b and hash(a) == hash(b)
    assert isinstance(a, Call) and a.op == "Mean" and a.args == (Field("close"), Const(5))
    assert field_names(parse("Corr($close, Log($volume+1), 5)/$open")) == {"close", "volume", "open"}


def test_every_operator_parses_with_valid_arguments() -> None:
    sample = {"x": "$a", "v": "$b", "window": "5", "shift": "-1", "lag": "0", "span": "10", "q": "0.5"}
    for name, params in OPERATORS.items():
        text = f"{name}({', '.join(sample[p] for p in params)})"
        node = parse(text)
        assert isinstance(node, Call) and node.op == name, text


def test_syntax_error_names_position_and_expectation() -> None:
    with pytest.raises(ExpressionError) as info:
        parse("Mean($close 5)")
    err = info.value
    assert isinstance(err, ConfigError)
    assert err.expression == "Mean($close 5)" and err.position == 12
    lines = str(err).splitlines()
    assert lines[0] == "\"Mean($close 5)\": syntax error at position 12: expected ',' or ')'"
    assert lines[1].strip() == "Mean($close 5)"
    assert lines[2].index("^") - lines[1].index("M") == 12


@pytest.mark.parametrize(
    ("text", "position", "needle"),
    [
        ("$a +", 4, "found the end of the expression"),
        ("($a + $b", 8, "expected ')'"),
        ("$a $b", 3, "unexpected '$b'"),
        ("$a % 2", 3, "unexpected character '%'"),
        ("$ + 1", 0, "a field name after '$'"),
        ("close + 1", 0, "fields start with '$'"),
        ("$$roe_q", 0, "point-in-time"),
        ("$a > $b > $c", 8, "cannot be chained"),
        ("$a > $b & $c > $d", 13, "(a > b) & (c > d)"),
        ("Mean(,5)", 5, "expected a number"),
    ],
)
def test_syntax_errors(text: str, position: int, needle: str) -> None:
    with pytest.raises(ExpressionError, match="syntax error") as info:
        parse(text)
    assert info.value.position == position
    assert needle in str(info.value)


def test_unknown_operator_suggests_the_closest_names() -> None:
    with pytest.raises(ExpressionError) as info:
        parse("Meen($close, 5)")
    msg = str(info.value)
    assert "unknown operator 'Meen'" in msg and "did you mean Mean" in msg and "Known operators:" in msg
    assert info.value.position == 0
    with pytest.raises(ExpressionError, match="did you mean IdxMax"):
        parse("idxmax($high, 5)")
    with pytest.raises(ExpressionError, match="'Skew' is not supported"):
        parse("Skew($close, 5)")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("Mean($close)", "Mean takes 2 arguments (feature, N), got 1"),
        ("Corr($a, $b)", "Corr takes 3 arguments (feature, feature, N), got 2"),
        ("Mean($close, 0)", "argument 2 of Mean must be a whole number >= 1"),
        ("Mean($close, -3)", "must be a whole number >= 1"),
        ("Std($close, 2.5)", "got 2.5"),
        ("Max($close, $open)", "got $open"),
        ("Ref($close, 1.0)", "argument 2 of Ref must be a whole number"),
        ("Delta($close, -1)", "argument 2 of Delta must be a whole number >= 0"),
        ("Quantile($close, 5, 1)", "argument 3 of Quantile must be a fraction in (0, 1)"),
        ("Quantile($close, 5, 1.5)", "fraction in (0, 1)"),
        ("EMA($close, 1.5)", "a whole number >= 1 or a fraction in (0, 1)"),
        ("Mean(5, 3)", "only numbers as arguments"),
        ("Rank(1, $close)", "argument 1 of Rank must be an expression over fields"),
        ("1 + 2", "has no $field"),
        ("$a + 1/0", "cannot compute the constant Div(1, 0)"),
    ],
)
def test_argument_errors_name_the_operator_and_argument(text: str, needle: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert needle in str(info.value)
    assert info.value.expression == text


def _compose(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(inner, st.sampled_from(["+", "-", "*", "/", ">", "&"]), inner).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"
    )
    calls = st.one_of(
        inner.map(lambda s: f"Abs({s})"),
        inner.map(lambda s: f"Mean({s}, 3)"),
        st.tuples(inner, inner).map(lambda t: f"Greater({t[0]}, {t[1]})"),
        inner.map(lambda s: f"-{s}"),
    )
    return st.one_of(binary, calls)


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.sampled_from(["$a", "$b", "2", "0.5"]), lambda inner: _compose(inner), max_leaves=12))
def test_canonical_form_reparses_to_the_same_tree(text: str) -> None:
    try:
        node = parse(text)
    except ExpressionError as err:  # constant-only or constant-folding errors are legitimate
        assert "no $field" in str(err) or "constant" in str(err) or "only numbers" in str(err)
        return
    assert parse(node.canonical) == node


def _consts(node: object) -> list[Const]:
    if isinstance(node, Const):
        return [node]
    if isinstance(node, Call):
        return [c for arg in node.args for c in _consts(arg)]
    return []
