#!/usr/bin/env bash
# End-to-end smoke test of the Qlib reference scripts on the tiny generated market.
# Usage: bash tests/qlib_ref/smoke.sh [WORK_DIR]     (needs .qlib-venv built; see README.md)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${QLIB_PY:-$ROOT/.qlib-venv/bin/python}"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK"
t() { local s=$(date +%s.%N); "$@"; echo "  [$(printf '%.1f' "$(echo "$(date +%s.%N) - $s" | bc)")s] $(basename "$2")" >&2; }

t python3 "$HERE/make_tiny_store.py" "$WORK/store" >/dev/null
t "$PY" "$HERE/alpha158.py" "$WORK/store" all 2020-01-02 2021-02-24 "$WORK/alpha158.parquet"
t "$PY" "$HERE/expressions.py" "$WORK/store" all 2020-01-02 2021-02-24 "$WORK/expr.parquet" \
    '$close' '$change' 'Mean($close, 5)' 'Ref($close, 1)'
# prediction = noisy future return, for every stock (not the index), 2020-04-01 .. 2021-02-10
"$PY" - "$WORK" <<'PYEOF'
import sys, numpy as np, pandas as pd
w = sys.argv[1]
a = pd.read_parquet(f"{w}/alpha158.parquet")
s = a["LABEL0"].drop("SH000300", level="instrument").loc["2020-04-01":"2021-02-10"]
s = s.fillna(0).astype("float64") + np.random.default_rng(0).normal(0, 0.01, len(s))
s.rename("score").to_frame().to_parquet(f"{w}/pred.parquet")
PYEOF
t "$PY" "$HERE/backtest.py" "$WORK/store" "$WORK/pred.parquet" "$WORK/bt" --topk 5 --n-drop 1

"$PY" - "$WORK" <<'PYEOF'
import json, sys
import numpy as np, pandas as pd
w = sys.argv[1]
cal = pd.to_datetime(open(f"{w}/store/calendars/day.txt").read().split())
def raw(sym, field):
    v = np.fromfile(f"{w}/store/features/{sym.lower()}/{field}.day.bin", dtype="<f4")
    s = int(v[0]); return pd.Series(v[1:], index=cal[s:s + len(v) - 1])

# --- alpha158
a = pd.read_parquet(f"{w}/alpha158.parquet")
from qlib.contrib.data.loader import Alpha158DL
_, names = Alpha158DL.get_feature_config({"kbar": {}, "price": {"windows": [0], "feature": ["OPEN", "HIGH", "LOW", "VWAP"]}, "rolling": {}})
assert list(a.columns) == list(names) + ["LABEL0"] and len(a.columns) == 159, a.columns
assert list(a.index.names) == ["datetime", "instrument"] and a.index.is_monotonic_increasing
n = a.groupby(level="instrument").size()
assert n["SZ000538"] == 200 and n["SH600025"] == 200 and n["SZ000002"] == 270 and n["SH600004"] == 300, n
sh = a.xs("SH600000", level="instrument")
susp = cal[[50, 51, 52, 160, 161, 162]]
assert sh.loc[susp, "KMID"].isna().all() and sh.drop(susp)["KMID"].notna().all()
assert sh["LABEL0"].iloc[-2:].isna().all()
# KMID = ($close-$open)/$open recomputed from the bins
kmid = ((raw("SH600000", "close") - raw("SH600000", "open")) / raw("SH600000", "open"))
assert np.allclose(sh["KMID"], kmid.reindex(sh.index), equal_nan=True, rtol=1e-5, atol=1e-7)
# --- expressions
e = pd.read_parquet(f"{w}/expr.parquet")
assert list(e.columns) == ["$close", "$change", "Mean($close, 5)", "Ref($close, 1)"]
c = e["$close"].xs("SZ000538", level="instrument")
assert c.index[0] == cal[100] and (c.values == raw("SZ000538", "close").values).all()
assert e["$close"].xs("SH600000", level="instrument").loc[susp].isna().all()
# --- backtest
r = pd.read_parquet(f"{w}/bt/report.parquet")
assert list(r.columns) == ["account", "return", "total_turnover", "turnover", "total_cost", "cost", "value", "cash", "bench"]
days = cal[(cal >= "2020-04-01") & (cal <= cal[cal.get_loc(pd.Timestamp("2021-02-10")) + 1])]
assert r.index.equals(pd.DatetimeIndex(days, name="datetime")), (len(r), len(days))
bench = raw("SH000300", "close").pct_change().reindex(r.index)
assert np.allclose(r["bench"], bench, rtol=1e-5, atol=1e-7)
risk = json.load(open(f"{w}/bt/risk.json"))
keys = {f"excess_return_{c}_cost.{m}" for c in ("with", "without")
        for m in ("mean", "std", "annualized_return", "information_ratio", "max_drawdown")}
assert set(risk) == keys, sorted(risk)
ex = r["return"] - r["bench"]
assert np.isclose(risk["excess_return_without_cost.mean"], ex.mean())
assert np.isclose(risk["excess_return_with_cost.annualized_return"], (ex - r["cost"]).mean() * 238)
print(f"qlib_ref smoke OK: alpha158, expressions, backtest ({len(a)} alpha158 rows, {len(r)} backtest days) in {w}")
PYEOF
