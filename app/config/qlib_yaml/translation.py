"""Walking a Qlib workflow config: every class and kwarg looked up in the tables, collected as qtrain settings,
notes and problems."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.config.qlib_yaml.reading import (
    _NO_DEFAULT,
    LIGHTGBM_DEFAULT_SEEDS,
    QLIB_EXPERIMENT,
    QLIB_PROVIDER_URI,
    REGION_EXCHANGE,
    _At,
    _Map,
    _Refuse,
)
from app.config.qlib_yaml.tables import (
    _BACKTEST,
    _BACKTEST_ARGS,
    _EXCHANGE_ARGS,
    _PORT_ANA_DEFAULT,
    _QLIB_INIT_IGNORED,
    _SEED_NOTE,
    DATASETS,
    EXECUTORS,
    HANDLERS,
    MODELS,
    RECORDS,
    STRATEGIES,
    Pairs,
    _Arg,
    _Class,
    _class_name,
    _Problems,
)

# ------------------------------------------------------------------------------------------------ translation


@dataclass
class _Collected:
    groups: dict[str, str] = field(default_factory=dict)
    explicit: dict[str, Any] = field(default_factory=dict)
    implied: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[tuple[int, str, str]] = field(default_factory=list)  # line, key path, message
    known: dict[str, str] = field(default_factory=dict)  # kind of class -> the ones qtrain implements
    lightgbm_given: set[str] = field(default_factory=set)  # LightGBM main names the file sets
    lightgbm: bool = False
    segments: set[str] | None = None


class _Translator:
    def __init__(self) -> None:
        self.out = _Collected()
        self.implying = False  # translating a Qlib default config: every setting is a default

    def problem(self, at: _At, message: str) -> None:
        self.out.problems.append((at.line, at.path, message))

    def set(self, pairs: Pairs, *, implied: bool = False) -> None:
        implied = implied or self.implying
        for key, value in pairs:
            target = self.out.implied if implied else self.out.explicit
            if not implied or key not in self.out.explicit:
                target[key] = value

    def convert(self, arg: _Arg, at: _At, *, implied: bool = False) -> None:
        try:
            self.set(arg.convert(at), implied=implied)
        except _Refuse as exc:
            self.refused(exc, at)
        except _Problems as many:
            for refusal in many.problems:
                self.refused(refusal, at)

    def refused(self, exc: _Refuse, at: _At) -> None:
        self.problem(exc.at or at, str(exc))
        if exc.known:
            self.out.known[exc.known[0]] = exc.known[1]

    def cls(self, at: _At | None, table: Mapping[str, _Class], kind: str) -> _Class | None:
        """The table entry of the class ``at`` names (a problem when qtrain lacks it)."""
        if at is None:
            return None
        try:
            name, where = _class_name(at, None)
        except _Refuse as exc:
            self.problem(exc.at or at, str(exc))
            return None
        if name not in table:
            canonical: dict[int, str] = {}
            for path, spec in table.items():
                canonical.setdefault(id(spec), f"{spec.name} ({path.rpartition('.')[0]})")
            module, _, short = name.rpartition(".")
            self.refused(_Refuse(f"{kind} class {short} ({module or 'no module_path'}) is not implemented by qtrain",
                                 where, (f"{kind}s", ", ".join(canonical.values()))), where)  # fmt: skip
            return None
        return table[name]

    def kwargs(self, at: _At, spec: _Class, *, extra: Callable[[str, _At], bool] | None = None) -> _At:
        """Translate the ``kwargs`` of class node ``at`` (see :meth:`args`); returns them."""
        kwargs = at.child("kwargs") if isinstance(at.value, Mapping) else None
        if kwargs is None or kwargs.value is None:
            kwargs = _At(_Map(), f"{at.path}.kwargs", at.line)
        return self.args(kwargs, spec, extra=extra)

    def args(self, kwargs: _At, spec: _Class, *, extra: Callable[[str, _At], bool] | None = None) -> _At:
        """Translate each kwarg by ``spec`` (``extra`` may take the others) and add Qlib's defaults of the rest."""
        if not isinstance(kwargs.value, Mapping):
            self.problem(kwargs, f"expected a mapping of {spec.name}'s kwargs, got {kwargs.value!r}")
            return _At(_Map(), kwargs.path, kwargs.line)
        for name, item in kwargs.items():
            if name in spec.args:
                self.convert(spec.args[name], item)
            elif not (extra and extra(name, item)):
                self.problem(item, f"kwarg {name} of {spec.name} is not implemented by qtrain")
        for name, arg in spec.args.items():
            if name not in kwargs.value and arg.default is not _NO_DEFAULT:
                self.convert(arg, kwargs.default(name, arg.default), implied=True)
        self.set(spec.fixed, implied=True)
        return kwargs

    # -- sections ------------------------------------------------------------------------------------------
    def document(self, doc: _At) -> None:
        for name, item in doc.items():
            if name == "BASE_CONFIG_PATH":
                self.problem(item, "not implemented by qtrain: merge the base config into this file")
            elif name == "sys" and item.value:
                self.problem(item, "not implemented by qtrain: it imports no modules from extra paths")
        init = doc.child("qlib_init") or doc.default("qlib_init", {})
        region = self.qlib_init(init)
        self.out.groups["data"] = "qlib_bin"
        experiment = doc.child("experiment_name")
        self.set([("experiment_name", experiment.value if experiment else QLIB_EXPERIMENT)])
        task = doc.child("task")
        if task is None or not isinstance(task.value, Mapping):
            self.problem(task or doc, "expected a task with model, dataset and record")
            return
        for key, item in task.items():
            if key not in ("model", "dataset", "record"):
                self.problem(item, f"task.{key} is not implemented by qtrain (it reads model, dataset and record)")
        self.model(task.child("model"), task)
        self.dataset(task.child("dataset"), task)
        self.records(task.child("record"), task, region)

    def qlib_init(self, init: _At) -> str:
        provider = init.child("provider_uri")
        if provider is not None and not isinstance(provider.value, str):
            self.problem(provider, "qtrain reads one store directory; give provider_uri as a path")
        self.set([("data.store.root", provider.value if provider else QLIB_PROVIDER_URI)])
        region = init.child("region")
        if region is not None and region.value not in REGION_EXCHANGE:
            self.problem(region, f"region {region.value!r} is not one of Qlib's {', '.join(REGION_EXCHANGE)}")
        for key, item in init.items():
            if key not in ("provider_uri", "region") and key not in _QLIB_INIT_IGNORED:
                hint = "; qtrain records to MLflow at MLFLOW_TRACKING_URI" if key == "exp_manager" else ""
                self.problem(item, f"qlib_init.{key} is not implemented by qtrain{hint}")
        return str(region.value) if region is not None and region.value in REGION_EXCHANGE else "cn"

    def model(self, at: _At | None, task: _At) -> None:
        spec = self.cls(at, MODELS, "model")
        if at is None:
            self.problem(task, "task.model is missing")
        if spec is None or at is None:
            return
        self.out.groups["model"] = str(spec.option)
        seed_given = [False]

        def lightgbm_param(name: str, item: _At) -> bool:
            from app.models.lightgbm_lib import lightgbm_aliases

            main = lightgbm_aliases().get(name)
            if main is None:
                self.problem(item, f"kwarg {name} of {spec.name} is neither one of its own nor a LightGBM parameter")
            elif main in ("objective", "num_iterations", "early_stopping_round"):
                self.problem(item, f"kwarg {name} is LightGBM's {main}, which qtrain sets from loss/epochs/rounds")
            elif main == "seed":
                seed_given[0] = item.value is not None
                self.set([("seed", item.value)] if seed_given[0] else [])
            elif main == "num_threads":
                self.set([("model.num_threads", item.value)])
            else:
                self.out.lightgbm_given.add(main)
                self.set([(f"model.{name}", item.value)])
            return True

        kwargs = self.kwargs(at, spec, extra=lightgbm_param if spec.lightgbm else None)
        if spec.combined is not None and isinstance(kwargs.value, Mapping):
            try:
                pairs, notes = spec.combined(kwargs, spec.args)
            except _Refuse as exc:
                self.refused(exc, kwargs)
            else:
                self.set(pairs)
                self.out.notes.extend(notes)
        if spec.lightgbm:
            self.out.lightgbm = True
            if not seed_given[0]:
                free = {k: v for k, v in LIGHTGBM_DEFAULT_SEEDS.items() if k not in self.out.lightgbm_given}
                self.set([(f"model.{k}", v) for k, v in free.items()], implied=True)
                self.out.notes.append(
                    f"{spec.name} passes LightGBM no seed and qtrain always passes one: LightGBM's defaults of the "
                    f"seeds it derives from seed are set instead ({', '.join(f'{k}={v}' for k, v in free.items())}), "
                    "which gives the trees of no seed"
                )
            if spec.option == "double_ensemble" and "decay" not in kwargs.value:
                self.out.notes.append("DEnsembleModel's default decay=None fails in Qlib; qtrain's decay=0.5 is kept")
        seed = kwargs.value.get("seed") if isinstance(kwargs.value, Mapping) else None
        for note in spec.notes:
            if note is _SEED_NOTE and seed is not None:
                continue
            self.out.notes.append(note.format(name=spec.name))

    def dataset(self, at: _At | None, task: _At) -> None:
        if at is None:
            self.problem(task, "task.dataset is missing")
            return
        spec = self.cls(at, DATASETS, "dataset")
        if spec is None:
            return
        kwargs = self.kwargs(at, spec)
        segments = kwargs.child("segments")
        if segments is None:
            self.problem(kwargs, "segments are missing (DatasetH needs at least train)")
        elif isinstance(segments.value, Mapping):
            self.out.segments = {str(k) for k in segments.value}
        handler = kwargs.child("handler")
        if handler is None:
            self.problem(kwargs, "handler is missing")
            return
        hspec = self.cls(handler, HANDLERS, "handler")
        if hspec is None:
            return
        self.out.groups["dataset"] = str(hspec.option)
        hkwargs = self.kwargs(handler, hspec)
        for name in ("start_time", "end_time"):
            if name not in hkwargs.value:
                self.out.notes.append(
                    f"{hspec.name} without {name} spans the whole calendar in Qlib; qtrain's handler spans the "
                    f"segments (dataset.handler.{name})"
                )

    def records(self, at: _At | None, task: _At, region: str) -> None:
        if at is None:
            self.out.groups["record"] = "[signal]"
            self.out.notes.append("the task has no record: Qlib records nothing; qtrain saves the predictions")
            return
        entries = at.elements() if isinstance(at.value, list) else [at]
        chosen: list[str] = []
        for entry in entries:
            spec = self.cls(entry, RECORDS, "record")
            if spec is None:
                continue
            if spec.option in chosen:
                self.problem(entry, f"a second {spec.name}: qtrain runs each record once")
                continue
            chosen.append(str(spec.option))
            kwargs = self.kwargs(entry, spec)
            if spec.option == "port_ana":
                config = kwargs.child("config")
                if config is None or config.value is None:
                    self.implying = True  # PortAnaRecord's own default config
                    config = kwargs.default("config", _PORT_ANA_DEFAULT)
                self.backtest(config, region)
                self.implying = False
        if not chosen:
            chosen.append("signal")
        self.out.groups["record"] = f"[{','.join(chosen)}]"

    def backtest(self, config: _At, region: str) -> None:
        if not isinstance(config.value, Mapping):
            self.problem(config, f"expected {{strategy, backtest, executor}}, got {config.value!r}")
            return
        for key, item in config.items():
            if key not in ("strategy", "backtest", "executor"):
                self.problem(item, f"{key} is not implemented by qtrain (its config has strategy, backtest, executor)")
        strategy = config.child("strategy")
        spec = self.cls(strategy, STRATEGIES, "strategy")
        if strategy is None:
            self.problem(config, "strategy is missing")
        elif spec is not None:
            kwargs = self.kwargs(strategy, spec)
            for required in ("topk", "n_drop"):
                if required not in kwargs.value:
                    self.problem(kwargs, f"{required} is missing (TopkDropoutStrategy needs it)")
        executor = config.child("executor")
        if executor is not None:
            espec = self.cls(executor, EXECUTORS, "executor")
            if espec is not None:
                self.kwargs(executor, espec)
        backtest = config.child("backtest")
        if backtest is None or not isinstance(backtest.value, Mapping):
            self.problem(backtest or config, "backtest is missing (start_time, end_time, account, exchange_kwargs)")
            return
        self.args(backtest, _Class("backtest", None, _BACKTEST_ARGS))
        exchange = backtest.child("exchange_kwargs") or backtest.default("exchange_kwargs", {})
        self.args(exchange, _Class("exchange_kwargs", None, _EXCHANGE_ARGS))
        if not isinstance(exchange.value, Mapping):
            return
        for name, value in REGION_EXCHANGE[region].items():
            if exchange.value.get(name) is None:  # absent or None: Qlib's Exchange takes the region's value
                self.set([(f"{_BACKTEST}.{name}", value)], implied=name not in exchange.value)
