"""Market data: Qlib binary store (read/write), import from CSV/Parquet, synthetic markets."""

from app.data.panel import Panel
from app.data.store import QlibStore

__all__ = ["Panel", "QlibStore"]
