"""IC, Rank IC, ICIR and long-short returns as SigAnaRecord computes them, by hand and against pandas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from app.core.errors import DataError
from app.evaluation.signal import daily_ic, long_short_returns, quantile_returns, signal_metrics

NAN = math.nan


def series(rows: list[tuple[str, str, float]]) -> pd.Series:
    frame = pd.DataFrame(rows, columns=["datetime", "instrument", "v"])
    frame["datetime"] = pd.to_datetime(frame["datetime"])
    return frame.set_index(["datetime", "instrument"])["v"]


def hand_frames() -> tuple[pd.Series, pd.Series]:
    pred = [
        ("2020-01-01", "A", 1),
        ("2020-01-01", "B", 2),
        ("2020-01-01", "C", 3),
        ("2020-01-02", "A", 1),
        ("2020-01-02", "B", 1),
        ("2020-01-02", "C", 2),  # tie
        ("2020-01-03", "A", 1),
        ("2020-01-03", "B", 2),
        ("2020-01-03", "C", 3),
        ("2020-01-03", "D", 4),
        ("2020-01-06", "A", 1),  # a single instrument
        ("2020-01-07", "A", 1),
        ("2020-01-07", "B", 2),  # no label that day
        ("2020-01-08", "A", 5),  # a constant prediction
        ("2020-01-08", "B", 5),
        ("2020-01-08", "C", 5),
    ]
    label = [("2020-01-01", "A", 1), ("2020-01-01", "B", 3), ("2020-01-01", "C", 2),
             ("2020-01-02", "A", 2), ("2020-01-02", "B", 1), ("2020-01-02", "C", 4),
             ("2020-01-03", "A", 1), ("2020-01-03", "B", NAN), ("2020-01-03", "C", 3), ("2020-01-03", "D", 2),
             ("2020-01-06", "A", 3),
             ("2020-01-08", "A", 1), ("2020-01-08", "B", 2), ("2020-01-08", "C", 3)]  # fmt: skip
    return series(pred), series(label)


def test_daily_ic_by_hand() -> None:
    ic = daily_ic(*hand_frames())
    assert list(ic.columns) == ["ic", "rank_ic"]
    assert ic.index.name == "datetime" and len(ic) == 6
    expected_ic = [0.5, 5 / math.sqrt(28), 6 / math.sqrt(84), NAN, NAN, NAN]
    expected_rank = [0.5, 1.5 / math.sqrt(3), 0.5, NAN, NAN, NAN]  # average ranks for the tie
    np.testing.assert_allclose(ic["ic"], expected_ic, rtol=1e-14)
    np.testing.assert_allclose(ic["rank_ic"], expected_rank, rtol=1e-14)


def test_signal_metrics_by_hand() -> None:
    ic = np.array([0.5, 5 / math.sqrt(28), 6 / math.sqrt(84)])
    rank = np.array([0.5, 1.5 / math.sqrt(3), 0.5])
    metrics = signal_metrics(*hand_frames())
    assert list(metrics) == ["IC", "ICIR", "Rank IC", "Rank ICIR"]
    assert metrics["IC"] == pytest.approx(ic.mean(), rel=1e-14)
    assert metrics["ICIR"] == pytest.approx(ic.mean() / ic.std(ddof=1), rel=1e-13)
    assert metrics["Rank IC"] == pytest.approx(rank.mean(), rel=1e-14)
    assert metrics["Rank ICIR"] == pytest.approx(rank.mean() / rank.std(ddof=1), rel=1e-13)


def test_long_short_by_hand() -> None:
    names = [f"S{i}" for i in range(10)]
    pred = series([("2020-01-01", s, float(i)) for i, s in enumerate(names)]
                  + [("2020-01-02", s, float(i)) for i, s in enumerate(names[:9])]
                  + [("2020-01-03", s, v) for s, v in zip("ABCDE", [1, 2, 2, 0, 0], strict=True)])  # fmt: skip
    day3 = [0.1, 0.2, 0.3, 0.4, 0.5]
    label = series([("2020-01-01", s, i / 100) for i, s in enumerate(names)]
                   + [("2020-01-02", s, i / 100) for i, s in enumerate(names[:9])]
                   + [("2020-01-03", s, v) for s, v in zip("ABCDE", day3, strict=True)])  # fmt: skip
    pred.iloc[5] = NAN  # a NaN prediction still counts in N = int(0.2 * rows)
    ls = long_short_returns(pred, label)
    np.testing.assert_allclose(ls["long_short"], [(0.085 - 0.005) / 2, (0.08 - 0.0) / 2, (0.2 - 0.4) / 2], rtol=1e-14)
    np.testing.assert_allclose(ls["long_avg"], [0.045, 0.04, 0.3], rtol=1e-14)
    metrics = signal_metrics(pred, label, long_short=True)
    r = ls["long_short"]
    assert metrics["Long-Short Ann Return"] == pytest.approx(r.mean() * 252, rel=1e-14)
    assert metrics["Long-Short Ann Sharpe"] == pytest.approx(r.mean() / r.std() * math.sqrt(252), rel=1e-14)
    assert metrics["Long-Avg Ann Return"] == pytest.approx(ls["long_avg"].mean() * 252, rel=1e-14)
    assert set(metrics) >= {"Long-Avg Ann Sharpe"}


def random_frames(seed: int) -> tuple[pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    index = pd.MultiIndex.from_product(
        [pd.bdate_range("2021-01-01", periods=40), [f"S{i:02d}" for i in range(25)]], names=["datetime", "instrument"]
    )
    pred = pd.Series(np.round(rng.normal(size=len(index)), 1), index=index)  # many ties
    label = pd.Series(rng.normal(size=len(index)) + 0.2 * pred.to_numpy(), index=index)
    pred[rng.random(len(pred)) < 0.1] = NAN
    label[rng.random(len(label)) < 0.1] = NAN
    pred = pred.drop(pred.index[rng.random(len(pred)) < 0.1])
    day = index.get_level_values("datetime")
    lonely = (day == index.levels[0][30]) & (index.get_level_values("instrument") != "S00")
    label = label[~lonely]  # day 30: a label for one instrument only
    return pred, label


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_qlibs_groupby_apply(seed: int) -> None:
    pred, label = random_frames(seed)
    df = pd.DataFrame({"pred": pred, "label": label})
    groups = df.groupby(level="datetime")
    ic = groups.apply(lambda x: x["pred"].corr(x["label"]))
    rank_ic = groups.apply(lambda x: x["pred"].corr(x["label"], method="spearman"))

    def n(x: pd.DataFrame) -> int:
        return int(len(x) * 0.2)

    top = groups.apply(lambda x: x.nlargest(n(x), columns="pred").label.mean())
    bottom = groups.apply(lambda x: x.nsmallest(n(x), columns="pred").label.mean())
    ours, ls = daily_ic(pred, label), long_short_returns(pred, label)
    np.testing.assert_allclose(ours["ic"], ic, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours["rank_ic"], rank_ic, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ls["long_short"], (top - bottom) / 2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ls["long_avg"], groups["label"].mean(), rtol=1e-12, atol=1e-15)
    assert np.isnan(ours["ic"].iloc[30])


def test_index_order_and_errors() -> None:
    pred, label = hand_frames()
    swapped = daily_ic(pred.swaplevel(), label)
    pd.testing.assert_frame_equal(swapped, daily_ic(pred, label))
    with pytest.raises(DataError, match="datetime, instrument"):
        daily_ic(pred.reset_index(level="instrument", drop=True), label)
    with pytest.raises(DataError, match="more than one row"):
        daily_ic(pd.concat([pred, pred.iloc[:1]]), label)


def test_a_constant_prediction_is_nan_only_when_its_mean_is_exact() -> None:
    # np.corrcoef (pandas' Series.corr): 0.1 * 3 has mean 0.10000000000000002, so the deviations are ~1e-17
    # and Qlib gets a ~1e-16 correlation (a ~0 day), while 5.0 * 3 has zero deviation and gives NaN
    pred = series([("2020-01-01", s, 0.1) for s in "ABC"] + [("2020-01-02", s, 5.0) for s in "ABC"])
    label = series(
        [(d, s, v) for d in ("2020-01-01", "2020-01-02") for s, v in zip("ABC", [1.0, 2.0, 4.0], strict=True)]
    )
    ic = daily_ic(pred, label)
    assert abs(ic["ic"].iloc[0]) < 1e-15
    assert np.isnan(ic["ic"].iloc[1])
    assert ic["rank_ic"].isna().all()  # equal ranks are exact: scipy's spearmanr gives NaN


def groupby_quantile_returns(pred: pd.Series, label: pd.Series, groups: int = 5) -> pd.DataFrame:
    """The groupby-rank implementation quantile_returns replaced (kept as the reference)."""
    frame = pd.DataFrame({"score": pred, "label": label}).dropna()
    ranks = frame.groupby(level="datetime")["score"].rank(pct=True, method="first").to_numpy(dtype=float)
    frame["group"] = np.clip(np.ceil(ranks * groups).astype(int), 1, groups)
    table = frame.groupby([frame.index.get_level_values("datetime"), "group"])["label"].mean().unstack()
    table.columns = [f"Group{int(g)}" for g in table.columns]
    table.index.name = "datetime"
    return table


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_quantile_returns_match_the_groupby_reference_exactly(seed: int) -> None:
    pred, label = random_frames(seed)
    if seed % 2:  # tied scores (broken by row order) and a float32 label, as the datasets give it
        pred = pred.round(0)
        label = label.astype(np.float32)
    if seed == 3:  # rows out of order
        pred = pred.sample(frac=1.0, random_state=seed)
    ours = quantile_returns(pred, label)
    pd.testing.assert_frame_equal(ours, groupby_quantile_returns(pred, label), check_exact=True, check_freq=False)
    assert list(ours.columns) == [f"Group{g}" for g in range(1, 6)] and ours.index.name == "datetime"


def test_quantile_returns_keep_only_groups_that_occur() -> None:
    pred, label = hand_frames()
    ours = quantile_returns(pred, label, groups=4)
    pd.testing.assert_frame_equal(ours, groupby_quantile_returns(pred, label, 4), check_exact=True, check_freq=False)
    assert ours.loc["2020-01-06"].notna().sum() == 1  # one instrument: one group that day, NaN elsewhere
