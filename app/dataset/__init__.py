"""Datasets: Qlib's processors, the raw / infer / learn views, date segments, time-series windows, a frame cache."""

from app.dataset.cache import FeatureCache
from app.dataset.dataset import Dataset, Segment, TSDataset
from app.dataset.timeseries import TSBatch, TSSampler
from app.dataset.views import ProcessedViews

__all__ = ["Dataset", "FeatureCache", "ProcessedViews", "Segment", "TSBatch", "TSDataset", "TSSampler"]
