"""What means what: each Qlib class and kwarg qtrain implements, and the qtrain key (or conversion) it becomes."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.config.qlib_yaml.reading import _NO_DEFAULT, PROCESSOR_MODULE, _At, _Refuse

# ------------------------------------------------------------------------------------------- what means what

Pairs = list[tuple[str, Any]]
Convert = Callable[[_At], Pairs]


@dataclass(frozen=True)
class _Arg:
    """One kwarg of a Qlib class: how it becomes qtrain keys, and Qlib's value when the file does not set it."""

    convert: Convert
    default: Any = _NO_DEFAULT


def _to(key: str, cast: Callable[[Any], Any] | None = None) -> Convert:
    """The kwarg is qtrain's ``key`` (value as given, or ``cast``)."""
    return lambda at: [(key, at.value if cast is None else cast(at.value))]


def _only(*allowed: Any, why: str = "") -> Convert:
    """Only these values are what qtrain does; they set nothing."""

    def convert(at: _At) -> Pairs:
        if at.value not in allowed:
            shown = " or ".join(repr(a) for a in allowed)
            raise _Refuse(f"{at.value!r} is not implemented by qtrain (only {shown}{'; ' + why if why else ''})")
        return []

    return convert


def _ignored(at: _At) -> Pairs:
    """Logging, caching and other settings that change no result."""
    return []


def _refused(why: str) -> Convert:
    def convert(at: _At) -> Pairs:
        raise _Refuse(f"not implemented by qtrain: {why}")

    return convert


def _date(value: Any) -> str:
    text = str(value)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}( 00:00:00)?", text):
        raise _Refuse(f"{value!r} is not a date (YYYY-MM-DD)")
    return text[:10]


def _date_or_none(value: Any) -> str | None:
    return None if value is None else _date(value)


def _device(value: Any) -> str:
    """Qlib's ``GPU``: an index (CUDA device N when there is one, else the CPU; negative: CPU) or a device name.

    0 is qtrain's ``auto``; N > 0 is ``cuda:N``, which fails where that device is missing instead of using the CPU.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Refuse(f"GPU={value!r} is neither a GPU index nor a device name")
    if isinstance(value, str):
        return value
    return "cpu" if value < 0 else "auto" if value == 0 else f"cuda:{value}"


def _optimizer(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in ("adam", "gd"):
        raise _Refuse(f"optimizer {value!r} is not implemented by qtrain (adam or gd)")
    return value.lower()


def _day_freq(at: _At) -> Pairs:
    values = at.value if isinstance(at.value, list) else [at.value]
    if any(v not in (None, "day", "1day", "1d") for v in values):
        raise _Refuse(f"{at.value!r}: qtrain analyses daily results only (day)")
    return []


@dataclass(frozen=True)
class _Class:
    """A Qlib class qtrain implements: the config group option it selects, its kwargs, and fixed behaviour."""

    name: str
    option: str | None  # the conf/<group> option it selects
    args: Mapping[str, _Arg] = field(default_factory=dict)
    fixed: Pairs = field(default_factory=list)  # what the Qlib class does without a kwarg for it
    lightgbm: bool = False  # other kwargs are LightGBM parameters
    notes: tuple[str, ...] = ()
    # kwargs that only mean something together (their own converters set nothing): the kwargs node (with Qlib's
    # defaults of what it lacks read from ``args``) -> the qtrain settings, and the notes they need
    combined: Callable[[_At, Mapping[str, _Arg]], tuple[Pairs, list[str]]] | None = None


_SEED_NOTE = (
    "{name} seeds nothing unless its kwargs have seed (each Qlib run differs); qtrain always seeds "
    "(seed=0 unless you add seed=N); model.batching=qlib draws the batches and dropout masks that Qlib draws "
    "given that seed"
)

# Qlib's GRUs and DNNModelPytorch draw their batches and dropout from numpy's and torch's global generators;
# batching=qlib replays those draws (app.models.gru, app.models.mlp)
_QLIB_BATCHING = ("model.batching", "qlib")

_GRU_ARGS: dict[str, _Arg] = {
    "d_feat": _Arg(_to("model.d_feat"), 6),
    "hidden_size": _Arg(_to("model.hidden_size"), 64),
    "num_layers": _Arg(_to("model.num_layers"), 2),
    "dropout": _Arg(_to("model.dropout"), 0.0),
    "n_epochs": _Arg(_to("model.n_epochs"), 200),
    "lr": _Arg(_to("model.lr"), 0.001),
    "metric": _Arg(_only("", "loss", why="qtrain early-stops on the validation loss")),
    "batch_size": _Arg(_to("model.batch_size"), 2000),
    "early_stop": _Arg(_to("model.early_stop"), 20),
    "loss": _Arg(_only("mse")),
    "optimizer": _Arg(_to("model.optimizer", _optimizer), "adam"),
    "GPU": _Arg(_to("model.device", _device), 0),
    "seed": _Arg(lambda at: [] if at.value is None else [("seed", at.value)]),
}


def _net_kwargs(at: _At) -> Pairs:
    """``pt_model_kwargs`` of Qlib's ``Net``: input_dim, layers, act (output_dim 1)."""
    if not isinstance(at.value, Mapping):
        raise _Refuse(f"expected a mapping of Net's kwargs, got {at.value!r}")
    pairs: Pairs = [("model.hidden_sizes", [256])]  # Net's default layers
    acts = {"LeakyReLU": "leaky_relu", "SiLU": "silu"}
    for name, item in at.items():
        if name == "input_dim":
            pairs.append(("model.d_feat", item.value))
        elif name == "layers":
            pairs[0] = ("model.hidden_sizes", list(item.value))
        elif name == "act" and item.value in acts:
            pairs.append(("model.activation", acts[item.value]))
        elif name == "output_dim" and item.value == 1:
            continue
        else:
            raise _Refuse(f"Net kwarg {name}={item.value!r} is not implemented by qtrain", item)
    return pairs


def _together(at: _At) -> Pairs:
    """A kwarg translated with others (:attr:`_Class.combined`)."""
    return []


def _scheduler(at: _At) -> Pairs:
    """DNNModelPytorch's ``scheduler``: ``default`` halves the lr after 10 evaluations without improvement (its
    ReduceLROnPlateau, stepped at every evaluation, as qtrain's after every epoch); None keeps the lr."""
    if at.value is None:
        return [("model.lr_patience", None)]
    return [*_only("default")(at), ("model.lr_patience", 10)]


def _dnn_steps(kwargs: _At, args: Mapping[str, _Arg]) -> tuple[Pairs, list[str]]:
    """DNNModelPytorch's ``max_steps`` random batches, evaluated every ``eval_steps``: with batching=qlib an epoch
    is ``eval_steps`` such batches and one evaluation, so ``n_epochs = max_steps / eval_steps``."""
    values = {}
    for name in ("max_steps", "eval_steps"):
        at = kwargs.child(name) or kwargs.default(name, args[name].default)
        if isinstance(at.value, bool) or not isinstance(at.value, int) or at.value < 1:
            raise _Refuse(f"{name}={at.value!r}: qtrain takes a whole number of steps >= 1", at)
        values[name] = at.value
    max_steps, eval_steps = values["max_steps"], values["eval_steps"]
    notes = []
    scheduler = kwargs.value.get("scheduler", args["scheduler"].default)
    if scheduler == "default":
        notes.append(
            "Qlib 0.9.7 cannot build DNNModelPytorch's default scheduler on torch >= 2.10 (its version test "
            "compares strings and passes the removed verbose argument); qtrain's is the one it builds on torch 2.7-2.9"
        )
    if max_steps <= eval_steps:  # one evaluation, at max_steps: exactly one epoch of max_steps batches
        return [("model.n_epochs", 1), ("model.eval_steps", max_steps)], notes
    epochs, rest = divmod(max_steps, eval_steps)
    if rest:
        notes.append(
            f"max_steps={max_steps} is not a multiple of eval_steps={eval_steps}: qtrain trains {epochs} epochs of "
            f"{eval_steps} steps ({epochs * eval_steps} steps); Qlib's last {rest} steps and the evaluation after "
            "them are not made"
        )
    return [("model.n_epochs", epochs), ("model.eval_steps", eval_steps)], notes


MODELS: Mapping[str, _Class] = {
    "qlib.contrib.model.gbdt.LGBModel": _Class(
        "LGBModel",
        "lgbm",
        {
            "loss": _Arg(_to("model.loss"), "mse"),
            "early_stopping_rounds": _Arg(_to("model.early_stopping_rounds"), 50),
            "num_boost_round": _Arg(_to("model.num_boost_round"), 1000),
        },
        lightgbm=True,
    ),
    "qlib.contrib.model.double_ensemble.DEnsembleModel": _Class(
        "DEnsembleModel",
        "double_ensemble",
        {
            "base_model": _Arg(_only("gbm", why="LightGBM sub-models"), "gbm"),
            "loss": _Arg(_only("mse"), "mse"),
            "num_models": _Arg(_to("model.num_models"), 6),
            "enable_sr": _Arg(_to("model.enable_sr"), True),
            "enable_fs": _Arg(_to("model.enable_fs"), True),
            "alpha1": _Arg(_to("model.alpha1"), 1.0),
            "alpha2": _Arg(_to("model.alpha2"), 1.0),
            "bins_sr": _Arg(_to("model.bins_sr"), 10),
            "bins_fs": _Arg(_to("model.bins_fs"), 5),
            "decay": _Arg(_to("model.decay")),
            "sample_ratios": _Arg(_to("model.sample_ratios"), [0.8, 0.7, 0.6, 0.5, 0.4]),
            "sub_weights": _Arg(_to("model.sub_weights"), None),
            "epochs": _Arg(_to("model.epochs"), 100),
            "early_stopping_rounds": _Arg(_to("model.early_stopping_rounds"), None),
        },
        lightgbm=True,
        notes=(
            "DEnsembleModel draws feature-selection samples from numpy's global, unseeded generator; qtrain "
            "draws them from numpy.random.default_rng(seed)",
        ),
    ),
    "qlib.contrib.model.pytorch_gru_ts.GRU": _Class(
        "GRU",
        "gru_ts",
        {**_GRU_ARGS, "n_jobs": _Arg(_to("model.num_workers"))},  # DataLoader workers: no result changes
        fixed=[("model.time_series", True), ("model.weight_decay", 0.0), ("model.clip_value", 3.0), _QLIB_BATCHING],
        notes=(_SEED_NOTE,),
    ),
    "qlib.contrib.model.pytorch_gru.GRU": _Class(
        "GRU",
        "gru",
        _GRU_ARGS,
        fixed=[("model.time_series", False), ("model.weight_decay", 0.0), ("model.clip_value", 3.0), _QLIB_BATCHING],
        notes=(_SEED_NOTE,),
    ),
    "qlib.contrib.model.pytorch_nn.DNNModelPytorch": _Class(
        "DNNModelPytorch",
        "mlp",
        {
            "lr": _Arg(_to("model.lr"), 0.001),
            "batch_size": _Arg(_to("model.batch_size"), 2000),
            "optimizer": _Arg(_to("model.optimizer", _optimizer), "gd"),
            "loss": _Arg(_only("mse"), "mse"),
            "GPU": _Arg(_to("model.device", _device), 0),
            "seed": _GRU_ARGS["seed"],
            "weight_decay": _Arg(_to("model.weight_decay"), 0.0),
            "scheduler": _Arg(_scheduler, "default"),
            "pt_model_uri": _Arg(_only("qlib.contrib.model.pytorch_nn.Net")),
            "pt_model_kwargs": _Arg(_net_kwargs, {"input_dim": 360, "layers": [256]}),
            "max_steps": _Arg(_together, 300),
            "eval_steps": _Arg(_together, 20),
            "early_stop_rounds": _Arg(_to("model.early_stop"), 50),  # in evaluations, as an epoch here is one
            "data_parall": _Arg(_only(False)),
            "init_model": _Arg(_only(None)),
            "eval_train_metric": _Arg(_ignored),
            "valid_key": _Arg(_only("learn")),
        },
        fixed=[("model.dropout", 0.05), ("model.clip_value", None), _QLIB_BATCHING],
        notes=(_SEED_NOTE,),
        combined=_dnn_steps,
    ),
}
MODELS = {  # the names Qlib's packages re-export
    **MODELS,
    "qlib.contrib.model.LGBModel": MODELS["qlib.contrib.model.gbdt.LGBModel"],
    "qlib.contrib.model.DEnsembleModel": MODELS["qlib.contrib.model.double_ensemble.DEnsembleModel"],
    "qlib.contrib.model.GRU": MODELS["qlib.contrib.model.pytorch_gru.GRU"],
    "qlib.contrib.model.DNNModelPytorch": MODELS["qlib.contrib.model.pytorch_nn.DNNModelPytorch"],
}


# processor class -> qtrain target, its kwargs (qtrain's defaults equal Qlib's), whether the handler's fit window
# is passed to it (Qlib's check_transform_proc does that for processors taking fit_start_time/fit_end_time)
PROCESSORS: Mapping[str, tuple[str, frozenset[str], bool]] = {
    "DropnaLabel": ("app.dataset.processors.DropnaLabel", frozenset({"fields_group"}), False),
    "DropnaProcessor": ("app.dataset.processors.DropnaProcessor", frozenset({"fields_group"}), False),
    "DropCol": ("app.dataset.processors.DropCol", frozenset({"col_list"}), False),
    "CSZFillna": ("app.dataset.processors.CSZFillna", frozenset({"fields_group"}), False),
    "CSZScoreNorm": ("app.dataset.processors.CSZScoreNorm", frozenset({"fields_group", "method"}), False),
    "CSRankNorm": ("app.dataset.processors.CSRankNorm", frozenset({"fields_group"}), False),
    "ZScoreNorm": ("app.dataset.processors.ZScoreNorm", frozenset({"fields_group"}), True),
    "RobustZScoreNorm": ("app.dataset.processors.RobustZScoreNorm", frozenset({"fields_group", "clip_outlier"}), True),
    "Fillna": ("app.dataset.processors.Fillna", frozenset({"fields_group", "fill_value"}), False),
    "ProcessInf": ("app.dataset.processors.ProcessInf", frozenset(), False),
    "FilterCol": ("app.dataset.processors.FilterCol", frozenset({"fields_group", "col_list"}), False),
}

_ALPHA158_LEARN = [{"class": "DropnaLabel"}, {"class": "CSZScoreNorm", "kwargs": {"fields_group": "label"}}]
_ALPHA360_INFER = [
    {"class": "ProcessInf", "kwargs": {}},
    {"class": "ZScoreNorm", "kwargs": {}},
    {"class": "Fillna", "kwargs": {}},
]


def _processors(at: _At) -> list[dict[str, Any]]:
    if not isinstance(at.value, list):
        raise _Refuse(f"expected a list of processors, got {at.value!r}")
    out = []
    problems = []
    for item in at.elements():
        name, where = _class_name(item, PROCESSOR_MODULE)
        module, _, short = name.rpartition(".")
        if module != PROCESSOR_MODULE or short not in PROCESSORS:
            implemented = ("processors", ", ".join(PROCESSORS))
            problems.append(_Refuse(f"processor {short} ({module}) is not implemented by qtrain", where, implemented))
            continue
        target, known, fitted = PROCESSORS[short]
        node: dict[str, Any] = {"_target_": target}
        kwargs = item.child("kwargs") if isinstance(item.value, Mapping) else None
        for key, arg in kwargs.items() if kwargs is not None else ():
            if key in known:
                node[key] = arg.value
            elif fitted and key in ("fit_start_time", "fit_end_time"):
                continue  # Qlib replaces them with the handler's fit window
            else:
                problems.append(_Refuse(f"kwarg {key} of processor {short} is not implemented by qtrain", arg))
        if fitted:
            node["fit_start_time"] = "${dataset.handler.fit_start_time}"
            node["fit_end_time"] = "${dataset.handler.fit_end_time}"
        out.append(node)
    if problems:
        raise _Problems(problems)
    return out


class _Problems(Exception):
    """Several refusals from one kwarg (e.g. two processors of one list)."""

    def __init__(self, problems: list[_Refuse]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


def _label(at: _At) -> Pairs:
    """Qlib's ``label``: a list of expressions (named by position here), or ``[[expressions], [names]]``."""
    value = at.value
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, list) for v in value):
        exprs, names = value
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        exprs, names = value, [f"LABEL{i}" for i in range(len(value))]
    else:
        raise _Refuse(f"expected a list of label expressions, got {value!r}")
    if len(exprs) != len(names) or not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise _Refuse(f"label names {names!r} must be one identifier per expression")
    return [("dataset.handler.features.label", dict(zip(names, exprs, strict=True)))]


def _handler_args(learn_default: list[Any], infer_default: list[Any]) -> dict[str, _Arg]:
    return {
        "instruments": _Arg(_to("data.market", _market), "csi500"),
        "start_time": _Arg(_to("dataset.handler.start_time", _date)),
        "end_time": _Arg(_to("dataset.handler.end_time", _date)),
        "fit_start_time": _Arg(_to("dataset.handler.fit_start_time", _date)),
        "fit_end_time": _Arg(_to("dataset.handler.fit_end_time", _date)),
        "freq": _Arg(_only("day", why="qtrain trains on daily bars")),
        "infer_processors": _Arg(lambda at: [("dataset.handler.infer_processors", _processors(at))], infer_default),
        "learn_processors": _Arg(lambda at: [("dataset.handler.learn_processors", _processors(at))], learn_default),
        "process_type": _Arg(_to("dataset.handler.process_type", _process_type), "append"),
        "shared_processors": _Arg(_only(None, [])),
        "filter_pipe": _Arg(_only(None)),
        "inst_processors": _Arg(_only(None)),
        "label": _Arg(_label),
        "drop_raw": _Arg(_ignored),
    }


def _process_type(value: Any) -> str:
    if value not in ("append", "independent"):
        raise _Refuse(f"{value!r} is not a process type of Qlib's DataHandlerLP (append or independent)")
    return str(value)


def _market(value: Any) -> str:
    if not isinstance(value, str):
        raise _Refuse(f"instruments {value!r}: qtrain takes a market name (an instruments/<market>.txt of the store)")
    return value


HANDLERS: Mapping[str, _Class] = {
    "qlib.contrib.data.handler.Alpha158": _Class("Alpha158", "alpha158", _handler_args(_ALPHA158_LEARN, [])),
    "qlib.contrib.data.handler.Alpha360": _Class(
        "Alpha360", "alpha360", _handler_args(_ALPHA158_LEARN, _ALPHA360_INFER)
    ),
}


def _segments(at: _At) -> Pairs:
    if not isinstance(at.value, Mapping) or "train" not in at.value:
        raise _Refuse(f"expected {{train: [START, END], ...}}, got {at.value!r}")
    segments = {}
    for name, seg in at.items():
        if not name.isidentifier() or not isinstance(seg.value, list) or len(seg.value) != 2:
            raise _Refuse(f"expected [START, END], got {seg.value!r}", seg)
        try:
            segments[name] = [_date(v) for v in seg.value]
        except _Refuse as exc:
            raise _Refuse(str(exc), seg) from None
    return [("data.segments", segments)]


_DATASET_ARGS = {
    "handler": _Arg(_ignored),  # translated on its own
    "segments": _Arg(_segments),
    "fetch_kwargs": _Arg(_only({})),
}
DATASETS: Mapping[str, _Class] = {
    "qlib.data.dataset.DatasetH": _Class("DatasetH", None, _DATASET_ARGS, fixed=[("dataset.step_len", None)]),
    "qlib.data.dataset.TSDatasetH": _Class(
        "TSDatasetH",
        None,
        {**_DATASET_ARGS, "step_len": _Arg(_to("dataset.step_len"), 30), "flt_col": _Arg(_only(None))},
    ),
}

RECORDS: Mapping[str, _Class] = {
    "qlib.workflow.record_temp.SignalRecord": _Class(
        "SignalRecord",
        "signal",
        {"model": _Arg(_only("<MODEL>")), "dataset": _Arg(_only("<DATASET>")), "skip_existing": _Arg(_ignored)},
    ),
    "qlib.workflow.record_temp.SigAnaRecord": _Class(
        "SigAnaRecord",
        "sig_ana",
        {
            "ana_long_short": _Arg(_to("record.sig_ana.ana_long_short"), False),
            "ann_scaler": _Arg(_to("record.sig_ana.ann_scaler"), 252),
            "label_col": _Arg(_only(0, why="qtrain's tasks have one label")),
            "skip_existing": _Arg(_ignored),
        },
    ),
    "qlib.workflow.record_temp.PortAnaRecord": _Class(
        "PortAnaRecord",
        "port_ana",
        {
            "config": _Arg(_ignored),  # translated on its own
            "risk_analysis_freq": _Arg(_day_freq),
            "indicator_analysis_freq": _Arg(_day_freq),
            "indicator_analysis_method": _Arg(_only(None, "mean")),
            "skip_existing": _Arg(_ignored),
        },
    ),
}

_BACKTEST = "record.port_ana.config"
STRATEGIES: Mapping[str, _Class] = {
    "qlib.contrib.strategy.signal_strategy.TopkDropoutStrategy": _Class(
        "TopkDropoutStrategy",
        None,
        {
            "signal": _Arg(_only("<PRED>", why="the run's own predictions")),
            "topk": _Arg(_to(f"{_BACKTEST}.topk")),
            "n_drop": _Arg(_to(f"{_BACKTEST}.n_drop")),
            "method_sell": _Arg(_only("bottom"), "bottom"),
            "method_buy": _Arg(_only("top"), "top"),
            "hold_thresh": _Arg(_to(f"{_BACKTEST}.hold_thresh"), 1),
            "only_tradable": _Arg(_to(f"{_BACKTEST}.only_tradable"), False),
            "forbid_all_trade_at_limit": _Arg(_to(f"{_BACKTEST}.forbid_all_trade_at_limit"), True),
            "risk_degree": _Arg(_to(f"{_BACKTEST}.risk_degree"), 0.95),
        },
    ),
}
STRATEGIES = {**STRATEGIES, "qlib.contrib.strategy.TopkDropoutStrategy": STRATEGIES[next(iter(STRATEGIES))]}

EXECUTORS: Mapping[str, _Class] = {
    "qlib.backtest.executor.SimulatorExecutor": _Class(
        "SimulatorExecutor",
        None,
        {
            "time_per_step": _Arg(_only("day", "1day", why="daily steps")),
            "generate_portfolio_metrics": _Arg(_ignored),  # qtrain always reports them
            "verbose": _Arg(_ignored),
            "track_data": _Arg(_ignored),
            "trade_type": _Arg(_only("serial")),
            "indicator_config": _Arg(_only({})),
        },
    ),
}

_BACKTEST_ARGS: Mapping[str, _Arg] = {
    "start_time": _Arg(_to(f"{_BACKTEST}.start", _date_or_none), None),
    "end_time": _Arg(_to(f"{_BACKTEST}.end", _date_or_none), None),
    "account": _Arg(_to(f"{_BACKTEST}.account", lambda v: _number(v, "account")), 1e9),  # qlib.backtest.backtest
    "benchmark": _Arg(_to(f"{_BACKTEST}.benchmark"), "SH000300"),
    "exchange_kwargs": _Arg(_ignored),  # translated on its own
    "pos_type": _Arg(_only("Position")),
}
# qlib.backtest.get_exchange / Exchange; limit_threshold, deal_price and trade_unit default to the region's
_EXCHANGE_ARGS: Mapping[str, _Arg] = {
    "freq": _Arg(_only("day")),
    "open_cost": _Arg(_to(f"{_BACKTEST}.open_cost"), 0.0015),
    "close_cost": _Arg(_to(f"{_BACKTEST}.close_cost"), 0.0025),
    "min_cost": _Arg(_to(f"{_BACKTEST}.min_cost"), 5.0),
    "limit_threshold": _Arg(_to(f"{_BACKTEST}.limit_threshold", lambda v: _number(v, "limit_threshold"))),
    "deal_price": _Arg(_to(f"{_BACKTEST}.deal_price", lambda v: _text(v, "deal_price"))),
    "trade_unit": _Arg(_to(f"{_BACKTEST}.trade_unit")),
    "impact_cost": _Arg(_only(0, 0.0), 0.0),
    "volume_threshold": _Arg(_only(None)),
    "codes": _Arg(_only("all")),
    "subscribe_fields": _Arg(_ignored),
    "extra_quote": _Arg(_only(None)),
}
# PortAnaRecord's config when its kwargs have none
_PORT_ANA_DEFAULT = {
    "strategy": {
        "class": "TopkDropoutStrategy",
        "module_path": "qlib.contrib.strategy",
        "kwargs": {"signal": "<PRED>", "topk": 50, "n_drop": 5},
    },
    "backtest": {
        "start_time": None,
        "end_time": None,
        "account": 100000000,
        "benchmark": "SH000300",
        "exchange_kwargs": {
            "limit_threshold": 0.095,
            "deal_price": "close",
            "open_cost": 0.0005,
            "close_cost": 0.0015,
            "min_cost": 5,
        },
    },
}

_QLIB_INIT_IGNORED = frozenset({"kernels", "logging_level", "joblib_backend", "maxtasksperchild", "auto_mount"})


def _number(value: Any, name: str) -> float | int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise _Refuse(f"{name}={value!r}: qtrain takes a number here")
    return value


def _text(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _Refuse(f"{name}={value!r}: qtrain takes one price field here (e.g. close)")
    return value


def _class_name(at: _At, default_module: str | None) -> tuple[str, _At]:
    """The dotted path of the class a config node names, and where the name is written.

    Raises:
        _Refuse: the node names no class.
    """
    if isinstance(at.value, str):
        name, module, where = at.value, default_module, at
    elif isinstance(at.value, Mapping) and isinstance(at.value.get("class"), str):
        where = at.child("class") or at
        name, module = at.value["class"], at.value.get("module_path", default_module)
    else:
        raise _Refuse(f"expected {{class: ..., module_path: ..., kwargs: ...}}, got {at.value!r}", at)
    if module is None and "." in name:
        module, _, name = name.rpartition(".")
    return (f"{module}.{name}" if module else name), where
