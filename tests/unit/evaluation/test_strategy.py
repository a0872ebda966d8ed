"""TopkDropout's decision with Qlib's quirks: stable ties, NaN last, Python-slice counts, only_tradable."""

from __future__ import annotations

import numpy as np

from app.evaluation.strategy import pick, rank_desc

NAN = np.nan


def cols(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.intp)


def test_rank_desc_keeps_ties_and_nans_in_input_order() -> None:
    score = np.array([1.0, 2.0, NAN, 2.0, 1.0, NAN, 3.0, -0.0, 0.0])
    assert rank_desc(cols(9), score).tolist() == [6, 1, 3, 0, 4, 7, 8, 2, 5]


def test_pick_sells_the_held_names_among_the_worst_of_holdings_and_today() -> None:
    score = np.array([5.0, 1.0, 4.0, 3.0, 0.0])  # held 0 and 1; candidates 2, 3, 4
    picks = pick([0, 1], cols(5), score, topk=2, n_drop=1, tradable=None)
    assert picks.sell == {1}
    assert picks.buy == [2]


def test_a_candidate_ranked_below_the_holdings_protects_them() -> None:
    score = np.array([5.0, 3.0, 1.0])  # held 0, 1; today = [2] (n_drop 1 + topk 2 - 2 held), and it is the worst
    picks = pick([0, 1], cols(3), score, topk=2, n_drop=1, tradable=None)
    assert picks.sell == frozenset()
    assert picks.buy == []


def test_held_names_without_a_score_sort_last_and_are_sold_first() -> None:
    score = np.array([NAN, 1.0, 3.0, 2.0])  # 0 has no prediction row today
    picks = pick([0, 1], np.array([1, 2, 3]), score, topk=2, n_drop=1, tradable=None)
    assert picks.sell == {0}
    assert picks.buy == [2]


def test_negative_counts_drop_from_the_end_like_python_slices() -> None:
    score = np.arange(10, dtype=np.float64)[::-1].copy()  # 0 best ... 9 worst
    held = [0, 1, 2, 3, 4, 5]  # 6 held > topk + n_drop = 3
    picks = pick(held, cols(10), score, topk=2, n_drop=1, tradable=None)
    # today = cand[:1 + 2 - 6] = cand[:-3] = [6]; comb = held + [6] -> worst is 6 (not held): no sell
    assert picks.sell == frozenset()
    assert picks.buy == []  # today[:0 + 2 - 6] = today[:-4]
    lots = pick(held, cols(12), np.arange(12, dtype=np.float64)[::-1].copy(), topk=2, n_drop=1, tradable=None)
    assert lots.buy == []  # cand = 6..11, today = cand[:-3] = [6, 7, 8]; buy = today[:-4] = []


def test_n_drop_zero_sells_every_holding() -> None:
    score = np.array([5.0, 4.0, 3.0, 2.0])
    picks = pick([0, 1], cols(4), score, topk=2, n_drop=0, tradable=None)
    assert picks.sell == {0, 1}  # comb[-0:] is the whole list
    assert picks.buy == []  # today = cand[:0 + 2 - 2] is empty: the book is liquidated, nothing bought
    assert pick([], cols(4), score, topk=2, n_drop=0, tradable=None).buy == [0, 1]  # rebuilt the next day


def test_only_tradable_skips_untradable_names_while_counting() -> None:
    score = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    blocked = {2}
    picks = pick([0], cols(5), score, topk=2, n_drop=1, tradable=lambda c: c not in blocked)
    assert picks.buy == [1]  # today = first 2 tradable candidates [1, 3]; sell none -> buy 1
    assert pick([0], cols(5), score, topk=2, n_drop=1, tradable=None).buy == [1]


def test_only_tradable_with_a_non_positive_count_still_takes_one_name() -> None:
    score = np.array([5.0, 4.0, 3.0, 2.0])
    held = [0, 1, 2]  # n_today = 1 + 1 - 3 = -1
    # plain slice: today = [3][:-1] = [] -> comb = holdings -> the worst holding (2) is sold
    assert pick(held, cols(4), score, topk=1, n_drop=1, tradable=None).sell == {2}
    # Qlib's get_first_n appends before checking the count: today = [3], which now is the worst of comb
    assert pick(held, cols(4), score, topk=1, n_drop=1, tradable=lambda c: True).sell == frozenset()
