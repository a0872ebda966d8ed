"""Qlib workflow configs (the YAML files ``qrun`` reads) as ``qtrain run`` overrides.

A Qlib workflow config names classes (``class`` + ``module_path`` + ``kwargs``) for the model, the dataset and its
handler, the records and the backtest's strategy, executor and exchange. :func:`translate` maps every class and
kwarg it finds to the qtrain config key that does the same thing and returns one Hydra override per Qlib setting,
plus an override for each key the file leaves unset where Qlib's default differs from qtrain's (e.g. Qlib's
``LGBModel`` passes LightGBM no seed, qtrain always passes one: the translation sets LightGBM's own per-purpose
default seeds instead, which gives the same trees). Whether a key exists (``key=`` or ``+key=``) and which
defaults differ is decided by composing qtrain's config with Hydra, so the tables below only say what means what.

Anything qtrain does not implement (a class, a kwarg, or a value it cannot reproduce) is reported in one
:class:`ConfigError` naming each setting's key path and line in the file; nothing is dropped silently. What Qlib
does that no qtrain key can express (e.g. an unseeded torch model) becomes a ``#`` comment line of the printed
command. The file is read as Qlib reads it: YAML 1.2 (``2e-4`` is a number, ``yes`` a string), anchors,
aliases and ``<<:`` merge keys.
"""

from __future__ import annotations

import argparse
import inspect
import re
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.errors import ConfigError, QtrainError

EXIT_CONFIG = 2

QLIB_PROVIDER_URI = "~/.qlib/qlib_data/cn_data"  # qlib.init's default provider_uri
QLIB_EXPERIMENT = "workflow"  # qrun's default experiment_name

# LightGBM's defaults for the seeds that ``seed`` would derive (LightGBM's config.cpp); Qlib's LGBModel and
# DEnsembleModel pass no seed unless their kwargs have one, and setting these with any ``seed`` gives the same model.
LIGHTGBM_DEFAULT_SEEDS: Mapping[str, int] = {
    "data_random_seed": 1,
    "feature_fraction_seed": 2,
    "bagging_seed": 3,
    "drop_seed": 4,
    "objective_seed": 5,
    "extra_seed": 6,
}

# region -> what Qlib's Exchange takes from it when exchange_kwargs do not set it (qlib.config's region configs)
REGION_EXCHANGE: Mapping[str, Mapping[str, Any]] = {
    "cn": {"trade_unit": 100, "limit_threshold": 0.095, "deal_price": "close"},
    "us": {"trade_unit": 1, "limit_threshold": None, "deal_price": "close"},
    "tw": {"trade_unit": 1000, "limit_threshold": 0.1, "deal_price": "close"},
}

PROCESSOR_MODULE = "qlib.data.dataset.processor"  # where Qlib looks up a processor given by class name only


class _Absent:
    """The value of a key that must not be in qtrain's config (rendered ``~key``)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()
_NO_DEFAULT = object()


class _Refuse(Exception):
    """A kwarg value qtrain cannot reproduce; ``at`` narrows the location (an item of a list, a nested key)."""

    def __init__(self, message: str, at: _At | None = None, known: tuple[str, str] | None = None) -> None:
        super().__init__(message)
        self.at, self.known = at, known  # known: (kind, what qtrain implements of that kind)


# ------------------------------------------------------------------------------------------------ reading the file


class _Map(dict[Any, Any]):
    """A YAML mapping that keeps the (1-based) line of each key."""

    line: int = 0
    lines: dict[Any, int]


class _Seq(list[Any]):
    """A YAML sequence that keeps the (1-based) line of each item."""

    line: int = 0
    lines: list[int]


def _loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):  # type: ignore[misc]
        pass

    bool_tag, float_tag = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (bool_tag, float_tag)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    # YAML 1.2's core schema, as Qlib's ruamel loader reads it: no yes/no/on/off booleans, floats without a dot
    Loader.add_implicit_resolver(bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    Loader.add_implicit_resolver(
        float_tag,
        re.compile(
            r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
            r"|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+0123456789."),
    )

    def mapping(loader: Any, node: Any) -> _Map:
        loader.flatten_mapping(node)  # resolves `<<: *anchor`; the merged keys keep their own lines
        out = _Map()
        out.line, out.lines = node.start_mark.line + 1, {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            out[key] = loader.construct_object(value_node, deep=True)
            out.lines[key] = key_node.start_mark.line + 1
        return out

    def sequence(loader: Any, node: Any) -> _Seq:
        out = _Seq(loader.construct_object(child, deep=True) for child in node.value)
        out.line, out.lines = node.start_mark.line + 1, [child.start_mark.line + 1 for child in node.value]
        return out

    Loader.add_constructor("tag:yaml.org,2002:map", mapping)
    Loader.add_constructor("tag:yaml.org,2002:seq", sequence)
    # dates stay text: qtrain's config takes dates as YYYY-MM-DD strings
    Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))
    return Loader


def load(text: str, source: str = "<config>") -> Mapping[str, Any]:
    """Parse a Qlib workflow config; mappings and sequences remember their line numbers.

    Raises:
        ConfigError: not YAML, or not a mapping at the top.
    """
    import yaml

    try:
        doc = yaml.load(text, Loader=_loader())  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}{where}: not valid YAML: {problem}") from None
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: expected a Qlib workflow config (a mapping with qlib_init and task)")
    return doc


@dataclass(frozen=True)
class _At:
    """A value of the file with its key path and line."""

    value: Any
    path: str
    line: int

    def child(self, key: Any) -> _At | None:
        if not isinstance(self.value, Mapping) or key not in self.value:
            return None
        lines = getattr(self.value, "lines", {})
        return _At(self.value[key], f"{self.path}.{key}" if self.path else str(key), lines.get(key, self.line))

    def items(self) -> Iterator[tuple[str, _At]]:
        if isinstance(self.value, Mapping):
            for key in self.value:
                child = self.child(key)
                assert child is not None
                yield str(key), child

    def elements(self) -> list[_At]:
        lines = getattr(self.value, "lines", [])
        return [
            _At(v, f"{self.path}[{i}]", lines[i] if i < len(lines) else self.line) for i, v in enumerate(self.value)
        ]

    def default(self, name: str, value: Any) -> _At:
        """Qlib's default of kwarg ``name`` (not in the file), located at this node."""
        return _At(value, f"{self.path}.{name}" if self.path else name, self.line)


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


# ------------------------------------------------------------------------------------------------ the result


@dataclass(frozen=True)
class Translation:
    """The ``qtrain run`` overrides of one Qlib workflow config, and what they cannot express (``notes``)."""

    source: str
    overrides: tuple[str, ...]
    notes: tuple[str, ...]

    def command(self, extra: Sequence[str] = ()) -> str:
        """The command as it can be pasted into a shell: comment lines, then one override per line."""
        args = [*self.overrides, *extra]
        lines = [f"# {self.source}: a Qlib workflow config as qtrain run overrides", *(f"# {n}" for n in self.notes)]
        lines.append("qtrain run \\")
        lines += [f"  {shlex.quote(a)}" + (" \\" if i < len(args) - 1 else "") for i, a in enumerate(args)]
        return "\n".join(lines)


def translate(doc: Mapping[str, Any], source: str = "<config>") -> Translation:
    """The ``qtrain run`` overrides that do what the Qlib workflow config ``doc`` (from :func:`load`) does.

    Raises:
        ConfigError: one line naming every class, kwarg or value qtrain does not implement, with its key path
            and line in ``source``.
    """
    translator = _Translator()
    translator.document(_At(doc, "", getattr(doc, "line", 1)))
    collected = translator.out
    if collected.problems:
        raise ConfigError(_problem_line(source, collected.problems, collected.known))
    return Translation(source, tuple(_overrides(collected)), tuple(collected.notes))


def translate_file(path: Path | str) -> Translation:
    """:func:`translate` of the YAML file at ``path``.

    Raises:
        ConfigError: the file cannot be read or parsed, or holds a setting qtrain does not implement.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the Qlib workflow config ({exc.strerror or exc})") from None
    return translate(load(text, str(path)), str(path))


def _problem_line(source: str, problems: list[tuple[int, str, str]], known: Mapping[str, str]) -> str:
    problems = sorted(set(problems))
    if len(problems) == 1:
        line, path, message = problems[0]
        text = f"{source}:{line}: {path}: {message}"
    else:
        listed = "; ".join(f"line {line} {path}: {message}" for line, path, message in problems)
        text = f"{source}: {len(problems)} settings qtrain does not implement: {listed}"
    return text + "".join(f" (qtrain's {kind}: {names})" for kind, names in known.items())


def _overrides(collected: _Collected) -> list[str]:
    """Render the collected settings; Qlib's defaults only where they change qtrain's config."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from app.config.compose import conf_dir
    from app.config.jobs import compose_error_message

    groups = [f"{group}={choice}" for group, choice in collected.groups.items()]
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            base = compose("config", overrides=groups)
            explicit = dict(collected.explicit)
            unset = [s for s in base.data.segments if collected.segments is not None and s not in collected.segments]
            for name in unset:  # a dict override merges into the option's segments
                explicit.setdefault(f"data.segments.{name}", ABSENT)
            implied = {k: v for k, v in collected.implied.items() if k not in explicit}
            if collected.lightgbm:
                for key in _lightgbm_conf_params(base.model, collected.lightgbm_given):
                    implied.setdefault(f"model.{key}", ABSENT)  # Qlib passes LightGBM only what kwargs hold
            first = [*groups, *_render(base, explicit)]
            with_explicit = compose("config", overrides=first)
            with_all = compose("config", overrides=[*first, *_render(base, implied)])
            changed = {k: v for k, v in implied.items() if _effective(with_explicit, k) != _effective(with_all, k)}
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"the translated overrides do not compose: {compose_error_message(exc)}") from None
    return [*first, *_render(base, changed)]


def _lightgbm_conf_params(model: Any, given: set[str]) -> list[str]:
    """LightGBM parameters that qtrain's model option sets and the Qlib config does not."""
    from hydra.utils import get_object

    from app.models.lightgbm_lib import lightgbm_aliases

    aliases = lightgbm_aliases()
    fields = set(inspect.signature(get_object(str(model._target_))).parameters)
    return [str(k) for k in model if k not in fields and k in aliases and aliases[str(k)] not in given]


def _has(cfg: Any, key: str) -> bool:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, default=_NO_DEFAULT) is not _NO_DEFAULT


def _render(base: Any, settings: Mapping[str, Any]) -> list[str]:
    out = []
    for key, value in settings.items():
        if value is ABSENT:
            if _has(base, key):
                out.append(f"~{key}")
        else:
            out.append(f"{'' if _has(base, key) else '+'}{key}={hydra_value(value)}")
    return out


def _effective(cfg: Any, key: str) -> Any:
    """The value ``key`` has once built: the config's, else the default of the class its node builds."""
    from hydra.utils import get_object
    from omegaconf import DictConfig, OmegaConf

    value = OmegaConf.select(cfg, key, default=_NO_DEFAULT)
    if value is not _NO_DEFAULT:
        return _plain(OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value)
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    target = parent.get("_target_") if isinstance(parent, DictConfig) else None
    if isinstance(target, str):
        param = inspect.signature(get_object(target)).parameters.get(name)
        if param is not None and param.default is not inspect.Parameter.empty:
            return _plain(param.default)
    return _NO_DEFAULT


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


_BARE = re.compile(r"[A-Za-z_/][\w\-./]*|\d{4}-\d{2}-\d{2}|\$\{[\w.]+\}")


def hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (strings quoted only where the grammar needs it).

    Raises:
        ConfigError: a value the grammar cannot hold (a backslash, a mapping key that is not an identifier).
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        if _BARE.fullmatch(value) and value.lower() not in ("true", "false", "null", "nan", "inf"):
            return value
        if "\\" in value or ('"' in value and "'" in value):
            raise ConfigError(f"{value!r}: a backslash or both kinds of quote cannot be passed on in an override")
        return f"'{value}'" if '"' in value else f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        bad = [k for k in value if not (isinstance(k, str) and k.isidentifier())]
        if bad:
            raise ConfigError(f"{bad[0]!r}: a mapping key must be an identifier to be passed on as a qtrain override")
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"{value!r}: a {type(value).__name__} cannot be passed on as a qtrain override")


# ------------------------------------------------------------------------------------------------ the command


def main(argv: Sequence[str]) -> int:
    """``qtrain qlib CONFIG.yaml [--run] [OVERRIDE ...]``: print (and with ``--run``, run) the translation."""
    parser = argparse.ArgumentParser(
        prog="qtrain qlib",
        description="Translate a Qlib workflow config (qrun's YAML) into the equivalent `qtrain run` command.",
        epilog="Overrides after the file are appended to the translated ones (later ones win), e.g. seed=1.",
    )
    parser.add_argument("config", type=Path, help="a Qlib workflow YAML, e.g. workflow_config_lightgbm_Alpha158.yaml")
    parser.add_argument("--run", action="store_true", help="run the command after printing it")
    args, extra = parser.parse_known_args(list(argv))
    from app.core.settings import get_settings

    debug = False
    try:
        debug = get_settings().debug
        translation = translate_file(args.config)
    except QtrainError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(translation.command(extra), flush=True)
    if not args.run:
        return 0
    from app.cli.run import run

    return run([*translation.overrides, *extra])
