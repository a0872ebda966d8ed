"""Evaluation: signal (IC) analysis, the Qlib-exact TopkDropout backtest, risk analysis, records, plots."""
