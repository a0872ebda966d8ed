"""Qlib's ``DataHandlerLP`` + ``DatasetH`` as config objects: features on a market, processors, segments, cache."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from app.core.errors import ConfigError, DateRangeError, EmptyUniverseError, UnknownMarketError
from app.data.fingerprint import store_fingerprint
from app.data.store import QlibStore
from app.dataset.cache import FeatureCache, key_digest
from app.dataset.dataset import Dataset, TSDataset
from app.dataset.processors import Processor
from app.dataset.views import ProcessedViews, ProcessType
from app.features.handlers import FeatureSet

log = logging.getLogger(__name__)

_FIELD = re.compile(r"\$(\w+)")
CACHE_FORMAT = 2  # bump when feature or processor semantics change, so old cache entries miss (2: pandas 3.1 rules)


@dataclass(frozen=True, kw_only=True)
class DataHandler:
    """A feature set on a market over ``[start_time, end_time]``; processors fitted on the fit window.

    Mirrors Qlib's ``DataHandlerLP``: infer processors run on the raw frame, learn processors on the infer
    output (``process_type="append"``, Qlib's default) or on the raw frame (``"independent"``).
    """

    features: FeatureSet
    market: str
    start_time: str
    end_time: str
    fit_start_time: str
    fit_end_time: str
    infer_processors: Sequence[Processor] = ()
    learn_processors: Sequence[Processor] = ()
    process_type: ProcessType = "append"

    def fields(self) -> set[str]:
        """The stored fields (lower-case, without ``$``) the feature and label expressions read."""
        # The parser's $field token: the FeatureSet parsed every expression when it was built, and parsing
        # Alpha158 again would cost ~10 ms of each job's validation (this scan: ~1 ms).
        pairs = (*self.features.features, *self.features.labels)
        return {name.lower() for _, text in pairs for name in _FIELD.findall(text)}

    def raw_key(self, store: QlibStore) -> dict[str, object]:
        """What the raw frame depends on: store contents, expressions, market and dates."""
        return {
            "kind": "raw",
            "format": CACHE_FORMAT,
            "store": store_fingerprint(store.root),
            "features": [list(p) for p in self.features.features],
            "labels": [list(p) for p in self.features.labels],
            "pandas_rules": self.features.pandas_rules,
            "market": self.market,
            "start": str(self.start_time),
            "end": str(self.end_time),
        }

    def views_key(self, store: QlibStore) -> dict[str, object]:
        """What the processed views depend on: the raw frame plus the processors and fit window."""
        return {
            "kind": "views",
            "raw": self.raw_key(store),
            "infer": [_describe(p) for p in self.infer_processors],
            "learn": [_describe(p) for p in self.learn_processors],
            "fit": [str(self.fit_start_time), str(self.fit_end_time)],
            "process_type": self.process_type,
        }

    def raw(
        self, store: QlibStore, cache: FeatureCache | None = None, *, key: dict[str, object] | None = None
    ) -> pd.DataFrame:
        """The raw features and labels (computed, or loaded from ``cache``; ``key``: :meth:`raw_key`, if known)."""

        def build() -> pd.DataFrame:
            from app.features.frame import build_feature_frame  # numba kernels: loaded when features are built

            return build_feature_frame(store, self.features, self.market, self.start_time, self.end_time)

        if cache is None:
            return build()
        frame, hit = cache.get_or_build(key or self.raw_key(store), build)
        log.info("raw features %s (%d rows)", "loaded from cache" if hit else "computed and cached", len(frame))
        return frame

    def views(
        self, store: QlibStore, cache: FeatureCache | None = None, *, key: dict[str, object] | None = None
    ) -> ProcessedViews:
        """Raw, infer and learn views; with a cache, each processed view is cached too (``key``: :meth:`views_key`,
        if known: it fingerprints the store, which reads the calendar and instrument files)."""
        if cache is None:
            return self._process(self.raw(store))
        key = key or self.views_key(store)
        raw_key = key["raw"]
        assert isinstance(raw_key, dict)
        built: list[ProcessedViews] = []

        def build(view: str) -> pd.DataFrame:
            if not built:
                built.append(self._process(self.raw(store, cache, key=raw_key)))
            return built[0].get(view)

        infer, _ = cache.get_or_build({**key, "view": "infer"}, lambda: build("infer"))
        learn, _ = cache.get_or_build({**key, "view": "learn"}, lambda: build("learn"))
        raw = built[0].raw if built else self.raw(store, cache, key=raw_key)
        return ProcessedViews(
            raw=raw,
            infer=infer,
            learn=learn,
            fit_start=pd.Timestamp(self.fit_start_time),
            fit_end=pd.Timestamp(self.fit_end_time),
        )

    def _process(self, raw: pd.DataFrame) -> ProcessedViews:
        return ProcessedViews.build(
            raw,
            self.infer_processors,
            self.learn_processors,
            fit_start=self.fit_start_time,
            fit_end=self.fit_end_time,
            process_type=self.process_type,
        )


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """What ``conf/dataset/*.yaml`` builds: a handler, named segments and (for recurrent models) ``step_len``."""

    handler: DataHandler
    segments: Mapping[str, Sequence[str]] = field(default_factory=dict)
    step_len: int | None = None

    def __post_init__(self) -> None:
        if "train" not in self.segments:
            raise ConfigError(
                f"dataset.segments needs a 'train' segment; got {', '.join(self.segments) or 'none'}. "
                "Add segments.train: [START, END]."
            )

    def check(self, store: QlibStore) -> None:
        """Cheap checks against the store before any feature is computed: every segment and the handler's
        window lie inside the calendar, and the market lists instruments in each of them.

        Raises:
            ConfigError, DataError: the message starts with the offending key (``segments.test``,
                ``handler.market``, ...).
        """
        handler = self.handler
        windows = {}
        for name, seg in self.segments.items():
            if isinstance(seg, str) or len(seg) != 2:
                raise ConfigError(f"segments.{name}: expected [START, END], got {seg!r}")
            windows[f"segments.{name}"] = (seg[0], seg[1])
        windows["handler.start_time..end_time"] = (handler.start_time, handler.end_time)
        for key, (start, end) in windows.items():
            try:
                store.date_slice(start, end)
            except DateRangeError as exc:
                raise DateRangeError(f"{key} [{start}, {end}]: {exc}") from None
        try:
            membership = store.instruments(handler.market)
        except UnknownMarketError as exc:
            raise UnknownMarketError(f"handler.market: {exc}") from None
        for key, (start, end) in windows.items():
            lo, hi = pd.Timestamp(start), pd.Timestamp(end)
            if not any(a <= hi and b >= lo for spans in membership.values() for a, b in spans):
                raise EmptyUniverseError(
                    f"handler.market: market {handler.market!r} of store {store.root} lists no instrument during "
                    f"{key} [{start}, {end}] ({len(membership)} instruments in all); pick another market or dates"
                )

    def build(self, store: QlibStore, cache: FeatureCache | None = None) -> Dataset:
        """Compute (or load) the views and wrap them with the segments.

        Raises:
            ConfigError, DataError: bad segments, an unknown market, dates outside the store's calendar, ...
        """
        key = self.handler.views_key(store) if cache is not None else None
        views = self.handler.views(store, cache, key=key)
        fingerprint = key_digest(key) if key is not None else None
        if self.step_len is None:
            return Dataset(views, self.segments, cache=cache, fingerprint=fingerprint)
        return TSDataset(views, self.segments, step_len=self.step_len, cache=cache, fingerprint=fingerprint)


def _describe(proc: Processor) -> dict[str, object]:
    params: dict[str, object] = {"type": f"{type(proc).__module__}.{type(proc).__qualname__}"}
    if dataclasses.is_dataclass(proc):
        for f in dataclasses.fields(proc):
            if f.init:
                value = getattr(proc, f.name)
                params[f.name] = str(value) if isinstance(value, pd.Timestamp) else value
    return params
