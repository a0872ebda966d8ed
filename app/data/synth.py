"""Deterministic synthetic markets in the shape of Qlib's CN daily data (prices already adjusted).

Generative model, over a ``[days × instruments]`` matrix (one ``np.random.default_rng(seed)``):

* daily return = beta·market + gamma·sector + idio + reversal + alpha, clipped to ±``limit``;
  the market has slowly varying volatility, idio shocks are Student-t (df 4) with per-stock scale;
* planted, weak, learnable signal: ``reversal = -kappa·EMA(past idio shocks)`` (short-term reversal),
  and ``alpha``, a latent AR(1) drift that also lifts log volume (abnormal volume reveals it);
* late listings, early delistings, suspension episodes (no bar; the price is frozen meanwhile);
* open/high/low/vwap consistent with close and within the limit band; volume lognormal around a
  drifting per-stock level, higher on big moves; ``factor`` steps up on dividend/split days;
* an equal-weight index ``SH000300`` and markets ``all``, ``synth`` and ``large`` (top half by
  trailing dollar volume, re-selected every ``rebalance`` days, so a stock may have several spans).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from app.core.errors import ConfigError
from app.data.instruments import Span

FIELDS = ("open", "high", "low", "close", "volume", "vwap", "factor", "change")
Markets = dict[str, dict[str, list[Span]]]


@dataclass(frozen=True)
class SynthSpec:
    """Size, seed and knobs of a synthetic market (defaults give a realistic CN-like market)."""

    instruments: int = 100
    days: int = 1500
    seed: int = 0
    start: str = "2015-01-05"
    sectors: int = 10
    index_symbol: str = "SH000300"
    limit: float = 0.10  # daily price limit (CN main board)
    late_listing: float = 0.2  # share of stocks listed after the first day
    delisting: float = 0.1  # share of stocks delisted before the last day
    suspensions_per_year: float = 0.5  # suspension episodes per stock per 250 bars
    signal: float = 1.0  # scale of the planted predictable components (0 = none)
    reversal: float = 0.09  # kappa: reversal per unit of EMA of past idio shocks
    reversal_decay: float = 0.6  # EMA decay of the reversal memory
    alpha_vol: float = 0.001  # stationary daily std of the latent alpha drift
    alpha_phi: float = 0.9  # AR(1) persistence of the latent alpha
    alpha_volume: float = 0.4  # log-volume loading on alpha / its std
    rebalance: int = 63  # `large` re-selection period (trading days)
    window: int = 60  # `large` trailing dollar-volume window (trading days)

    def __post_init__(self) -> None:
        if self.instruments < 2 or self.days < 30:
            raise ConfigError(
                f"SynthSpec(instruments={self.instruments}, days={self.days}): need at least 2 instruments and 30 days."
            )
        if not 0 < self.limit < 1 or self.sectors < 1 or self.rebalance < 1 or self.window < 1:
            raise ConfigError(
                f"SynthSpec: limit must be in (0, 1) and sectors/rebalance/window >= 1 (got limit={self.limit}, "
                f"sectors={self.sectors}, rebalance={self.rebalance}, window={self.window})."
            )


def trading_calendar(start: str, days: int) -> pd.DatetimeIndex:
    """``days`` trading days from ``start``: weekdays minus New Year, a spring-festival week, May 1, Oct 1-3.

    Depends only on ``start`` and ``days`` (not on any seed).
    """
    try:
        first = pd.Timestamp(start).normalize()
    except ValueError:
        raise ConfigError(f"SynthSpec.start {start!r} is not a date; use YYYY-MM-DD.") from None
    n = int(days * 1.1) + 40
    while True:
        d = pd.bdate_range(first, periods=n)
        y, m, dd = d.year.to_numpy(), d.month.to_numpy(), d.day.to_numpy()
        # spring festival: a 7-calendar-day block starting between Jan 21 and Feb 14, fixed per year
        sf = pd.to_datetime(pd.DataFrame({"year": y, "month": 1, "day": 21})).to_numpy() + ((y * 11) % 25).astype(
            "timedelta64[D]"
        )
        days_from_sf = (d.to_numpy() - sf).astype("timedelta64[D]").astype(np.int64)
        holiday = (
            ((m == 1) & (dd == 1))
            | ((m == 5) & (dd == 1))
            | ((m == 10) & (dd <= 3))
            | ((days_from_sf >= 0) & (days_from_sf < 7))
        )
        cal = d[~holiday]
        if len(cal) >= days:
            return pd.DatetimeIndex(cal[:days])
        n *= 2


def _symbols(n: int) -> list[str]:
    """Alternate Shanghai (SH600000, SH600001, ...) and Shenzhen (SZ000001, SZ000002, ...) codes."""
    return [f"SH{600000 + i // 2:06d}" if i % 2 == 0 else f"SZ{1 + i // 2:06d}" for i in range(n)]


def _ar1(shocks: np.ndarray, phi: float) -> np.ndarray:
    """``y[t] = phi * y[t-1] + shocks[t]`` along axis 0, ``y[-1] = 0``."""
    out = np.empty_like(shocks)
    prev = np.zeros(shocks.shape[1:])
    for t in range(shocks.shape[0]):
        prev = phi * prev + shocks[t]
        out[t] = prev
    return out


def _lifetimes(rng: np.random.Generator, spec: SynthSpec) -> tuple[np.ndarray, np.ndarray]:
    """First and last bar index per stock: a share lists late, a disjoint share delists early."""
    t, n = spec.days, spec.instruments
    perm = rng.permutation(n)
    n_late = min(n - 1, max(1, round(spec.late_listing * n))) if spec.late_listing > 0 else 0
    n_del = min(n - n_late, max(1, round(spec.delisting * n))) if spec.delisting > 0 else 0
    first = np.zeros(n, dtype=np.int64)
    last = np.full(n, t - 1, dtype=np.int64)
    first[perm[:n_late]] = rng.integers(1, int(0.6 * t) + 1, size=n_late)
    last[perm[n_late : n_late + n_del]] = rng.integers(int(0.4 * t), t - 1, size=n_del)
    return first, last


def _suspensions(rng: np.random.Generator, spec: SynthSpec, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Boolean ``[days × instruments]``: suspended days, strictly inside each stock's first..last."""
    susp = np.zeros((spec.days, spec.instruments), dtype=bool)
    life = last - first + 1
    counts = rng.poisson(spec.suspensions_per_year * life / 250.0)
    for col in np.nonzero(counts)[0]:
        if life[col] < 4:
            continue
        starts = rng.integers(first[col] + 1, last[col], size=counts[col])
        lengths = np.minimum(1 + rng.geometric(0.2, size=counts[col]), 30)
        for s, k in zip(starts, lengths, strict=True):
            susp[s : min(s + k, last[col]), col] = True
    return susp


def _spans(mask: np.ndarray, cal: pd.DatetimeIndex) -> list[Span]:
    """Runs of True in a 1-d boolean array as ``[(start_date, end_date), ...]``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return [(cal[int(a)], cal[int(b) - 1]) for a, b in zip(starts, ends, strict=True)]


def synth_market(
    spec: SynthSpec,
) -> tuple[pd.DatetimeIndex, dict[str, pd.DataFrame], Markets]:
    """Generate a market: ``(calendar, bars, markets)``.

    ``bars`` maps each symbol (stocks and the index) to a frame indexed by its bar dates (suspended days
    have no row) with float columns ``open, high, low, close, volume, vwap, factor, change``, every value
    exactly representable in float32. ``markets`` maps ``all`` / ``synth`` / ``large`` to
    ``{SYMBOL: [(start, end), ...]}``. The same spec always gives the same result.
    """
    rng = np.random.default_rng(spec.seed)
    cal = trading_calendar(spec.start, spec.days)
    t_n, n = spec.days, spec.instruments
    lim = spec.limit
    first, last = _lifetimes(rng, spec)
    rows = np.arange(t_n)[:, None]
    stored = (rows >= first) & (rows <= last)
    susp = _suspensions(rng, spec, first, last)
    bar = stored & ~susp

    # factor returns: market with slowly varying volatility, sectors
    log_vol = _ar1(rng.normal(0.0, 0.15 * np.sqrt(1 - 0.98**2), t_n), 0.98)
    market = 0.0003 + 0.011 * np.exp(log_vol) * rng.standard_normal(t_n)
    n_sec = min(spec.sectors, n)
    sector_ret = rng.normal(0.0, 0.007, (t_n, n_sec))
    sector = rng.permutation(np.arange(n) % n_sec)
    beta = rng.normal(1.0, 0.25, n)
    gamma = rng.normal(1.0, 0.3, n)
    sigma = np.exp(rng.normal(np.log(0.017), 0.3, n))
    # idiosyncratic shocks: Student-t(4) scaled to unit variance; none while suspended
    idio = sigma * rng.standard_t(4, (t_n, n)) / np.sqrt(2.0)
    idio[susp] = 0.0
    # planted signal: short-term reversal of past idio shocks + latent AR(1) alpha drift
    memory = _ar1(idio, spec.reversal_decay)
    phi = spec.alpha_phi
    alpha = _ar1(rng.normal(0.0, spec.alpha_vol * np.sqrt(1 - phi**2), (t_n, n)), phi)
    drift = np.zeros((t_n, n))
    drift[1:] = spec.signal * (alpha[:-1] - spec.reversal * memory[:-1])
    ret = np.clip(beta * market[:, None] + gamma * sector_ret[:, sector] + idio + drift, -lim, lim)
    ret[susp] = 0.0  # price frozen while suspended
    ret[0] = 0.0

    close = np.exp(rng.normal(np.log(12.0), 0.8, n)) * np.cumprod(1.0 + ret, axis=0)
    prev = np.vstack([close[:1], close[:-1]])
    gap = np.clip(0.35 * ret + 0.4 * sigma * rng.standard_normal((t_n, n)), -lim, lim)
    open_ = prev * (1.0 + gap)
    body_hi, body_lo = np.maximum(open_, close), np.minimum(open_, close)
    high = np.maximum(
        np.minimum(body_hi * (1.0 + np.abs(rng.normal(0, 0.5, (t_n, n))) * sigma), prev * (1 + lim)), body_hi
    )
    low = np.minimum(
        np.maximum(body_lo * (1.0 - np.abs(rng.normal(0, 0.5, (t_n, n))) * sigma), prev * (1 - lim)), body_lo
    )
    w = rng.random((t_n, n))
    vwap = np.clip(w * (open_ + close) / 2 + (1 - w) * (high + low) / 2, low, high)
    level = rng.normal(15.0, 1.0, n) + _ar1(rng.normal(0.0, 0.4 * np.sqrt(1 - 0.99**2), (t_n, n)), 0.99)
    log_volume = (
        level
        + 0.3 * np.abs(ret) / sigma
        + 0.2 * np.abs(market)[:, None] / 0.011
        + spec.signal * spec.alpha_volume * alpha / max(spec.alpha_vol, 1e-12)
        + 0.3 * rng.standard_normal((t_n, n))
    )
    volume = np.exp(log_volume)
    events = rng.random((t_n, n))
    factor = np.exp(rng.normal(0.5, 0.6, n)) * np.cumprod(
        np.where(events < 0.002, 1.0 + rng.uniform(0.005, 0.04, (t_n, n)), 1.0) * np.where(events > 0.9998, 2.0, 1.0),
        axis=0,
    )

    # everything as stored (float32), missing where there is no bar
    f32 = {
        name: np.where(bar, arr, np.nan).astype(np.float32).astype(np.float64)
        for name, arr in (
            ("open", open_),
            ("high", high),
            ("low", low),
            ("close", close),
            ("volume", volume),
            ("vwap", vwap),
            ("factor", factor),
        )
    }
    last_close = pd.DataFrame(f32["close"]).ffill().shift(1).to_numpy()
    change = f32["close"] / np.where(stored, last_close, np.nan) - 1.0
    f32["change"] = change.astype(np.float32).astype(np.float64)

    symbols = _symbols(n)
    bars: dict[str, pd.DataFrame] = {}
    for col, sym in enumerate(symbols):
        keep = np.nonzero(bar[:, col])[0]
        bars[sym] = pd.DataFrame({f: f32[f][keep, col] for f in FIELDS}, index=cal[keep])
    bars[spec.index_symbol] = _index_bars(cal, f32)

    everything = {s: [(cal[first[c]], cal[last[c]])] for c, s in enumerate(symbols)}
    dollar = np.where(bar, f32["close"] * f32["volume"], np.nan)
    large = _large_membership(spec, stored, dollar)
    markets: Markets = {
        "all": {**everything, spec.index_symbol: [(cal[0], cal[-1])]},
        "synth": everything,
        "large": {s: sp for c, s in enumerate(symbols) if (sp := _spans(large[:, c], cal))},
    }
    return cal, bars, markets


def _index_bars(cal: pd.DatetimeIndex, f32: dict[str, np.ndarray]) -> pd.DataFrame:
    """Equal-weight index over stocks with a bar and a ``change`` today; level 1000 on the first day."""
    valid = np.isfinite(f32["change"])
    count = valid.sum(axis=1)
    prev_close = f32["close"] / (1.0 + f32["change"])

    def mean_ratio(x: np.ndarray) -> np.ndarray:
        total = np.where(valid, x / prev_close, 0.0).sum(axis=1)
        return np.where(count > 0, total / np.maximum(count, 1), 1.0)

    ret = mean_ratio(f32["close"]) - 1.0
    close = 1000.0 * np.cumprod(1.0 + ret)
    prev = np.concatenate([[close[0]], close[:-1]])
    open_ = prev * mean_ratio(f32["open"])
    high = np.maximum.reduce([prev * mean_ratio(f32["high"]), open_, close])
    low = np.minimum.reduce([prev * mean_ratio(f32["low"]), open_, close])
    vwap = np.clip(prev * mean_ratio(f32["vwap"]), low, high)
    volume = pd.Series(np.nansum(f32["volume"], axis=1)).replace(0.0, np.nan).ffill().fillna(1.0).to_numpy()
    frame = (
        pd.DataFrame(
            {
                "open": open_,
                "high": high,
                "low": low,
                "close": close,
                "volume": volume,
                "vwap": vwap,
                "factor": np.ones(len(cal)),
            },
            index=cal,
        )
        .astype(np.float32)
        .astype(np.float64)
    )
    frame["change"] = (frame["close"] / frame["close"].shift(1) - 1.0).astype(np.float32).astype(np.float64)
    return frame[list(FIELDS)]


def _large_membership(spec: SynthSpec, stored: np.ndarray, dollar: np.ndarray) -> np.ndarray:
    """Boolean ``[days × instruments]``: the top half of listed stocks by trailing mean dollar volume."""
    t_n, n = stored.shape
    member = np.zeros((t_n, n), dtype=bool)
    valid = np.isfinite(dollar)
    csum = np.vstack([np.zeros(n), np.cumsum(np.where(valid, dollar, 0.0), axis=0)])
    ccnt = np.vstack([np.zeros(n), np.cumsum(valid, axis=0)])
    for t0 in range(0, t_n, spec.rebalance):
        a, b = max(0, t0 - spec.window), max(t0, 1)
        listed = stored[t0]
        cnt = ccnt[b] - ccnt[a]
        score = np.where(listed & (cnt > 0), (csum[b] - csum[a]) / np.maximum(cnt, 1), -np.inf)
        k = int(np.ceil(listed.sum() / 2))
        chosen = np.argsort(-score, kind="stable")[:k]
        chosen = chosen[listed[chosen]]
        member[t0 : t0 + spec.rebalance, chosen] = True
    out: np.ndarray = member & stored
    return out


def write_synth_market(dest: Path, spec: SynthSpec) -> None:
    """Generate the market for ``spec`` and write it to ``dest`` in Qlib's layout, atomically.

    ``dest`` is replaced as a whole on success and left untouched on failure.
    """
    from app.data.writer import staged_store, write_store

    cal, bars, markets = synth_market(spec)
    with staged_store(Path(dest)) as staging:
        write_store(staging, bars, markets, calendar=cal)
