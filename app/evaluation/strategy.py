"""Qlib 0.9.7's ``TopkDropoutStrategy`` decision for one step (method_sell "bottom", method_buy "top").

Pure list logic on column numbers (alphabetical symbol order); the caller owns prices and holdings.
Reproduces Qlib's quirks on purpose (``shared/reference/backtest.md`` §4): Python-slice counts that drop
from the end when negative, ``len(sell)`` counting candidates rather than executed sells, held names without
a score sorting last, and (only_tradable=False) buy candidates not checked for tradability.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Picks:
    """``sell``: held columns among the worst of (holdings ∪ today); ``buy``: new columns in score order."""

    sell: frozenset[int]
    buy: list[int]


def rank_desc(cols: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``cols`` by ``score[cols]`` descending; ties keep input order; NaN last in input order (pandas)."""
    return cols[np.argsort(-score[cols], kind="stable")]


def pick(
    held: list[int],
    present: np.ndarray,
    score: np.ndarray,
    *,
    topk: int,
    n_drop: int,
    tradable: Callable[[int], bool] | None,
) -> Picks:
    """The sell candidates and the buy list of one step.

    ``held`` is sorted; ``present`` holds the columns with a prediction row in the step's window (sorted);
    ``score`` is indexed by column (NaN for a missing or NaN score). ``tradable`` is given for
    ``only_tradable=True`` (it then filters while counting, as Qlib's ``get_first_n``/``get_last_n``).
    """
    held_arr = np.asarray(held, dtype=np.intp)
    ranked = rank_desc(present, score)
    cand = ranked[~np.isin(ranked, held_arr, assume_unique=True)]
    n_last = len(held)
    today = _first_n(cand, n_drop + topk - n_last, tradable)
    comb = rank_desc(np.union1d(held_arr, np.asarray(today, dtype=np.intp)), score)
    tail = set(_last_n(comb, n_drop, tradable))
    sell = frozenset(c for c in held if c in tail)
    buy = today[: len(sell) + topk - n_last]
    return Picks(sell=sell, buy=buy)


def _first_n(items: np.ndarray, n: int, tradable: Callable[[int], bool] | None) -> list[int]:
    if tradable is None:
        out: list[int] = items[:n].tolist()  # a Python slice: a negative n drops from the end
        return out
    res: list[int] = []
    for col in items.tolist():
        if tradable(col):
            res.append(col)
            if len(res) >= n:  # Qlib appends before checking, so n <= 0 still yields one name
                break
    return res


def _last_n(items: np.ndarray, n: int, tradable: Callable[[int], bool] | None) -> list[int]:
    if tradable is None:
        out: list[int] = items[-n:].tolist()  # n == 0 gives the whole list, as list(li)[-0:]
        return out
    return _first_n(items[::-1], n, tradable)[::-1]
