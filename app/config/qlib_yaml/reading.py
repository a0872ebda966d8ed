"""Reading a Qlib workflow config as Qlib does (YAML 1.2, anchors, ``<<:`` merges), keeping each value's line;
Qlib's defaults that the translation fills in."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from app.core.errors import ConfigError

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
