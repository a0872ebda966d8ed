"""The task spec: a composed config resolved to plain JSON, with a canonical hash.

It is the unit every trainer, the task pool and the broker carry: hashable, storable in MongoDB or SQLite,
sendable as JSON, and re-runnable anywhere. Equal specs (whatever their key order or number spelling) have
equal hashes; the task pool dedupes on the hash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.core.canonical import JsonValue, canonical_json, normalise, sha256_text
from app.core.errors import ConfigError


@dataclass(frozen=True)
class TaskSpec:
    """A resolved task configuration (``data``, ``dataset``, ``model``, ``records``, ``seed``, ...)."""

    body: dict[str, JsonValue]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TaskSpec:
        """Validate and normalise ``data`` (plain dicts/lists/scalars, e.g. a resolved OmegaConf container).

        Raises:
            ConfigError: a value JSON cannot hold, naming its key path (``spec.model.lr``).
        """
        body = normalise(data, "spec")
        if not isinstance(body, dict):
            raise ConfigError(f"a task spec is a mapping, got {type(data).__name__}")
        return cls(body)

    @classmethod
    def from_json(cls, text: str) -> TaskSpec:
        """Parse a spec sent over the broker or stored in the task pool.

        Raises:
            ConfigError: not JSON, or not a JSON object.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"task spec is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"task spec must be a JSON object, got {type(data).__name__}")
        return cls.from_mapping(data)

    def to_json(self) -> str:
        """The canonical JSON text (sorted keys, normalised numbers)."""
        return canonical_json(self.body, "spec")

    @property
    def hash(self) -> str:
        """Hex sha256 of :meth:`to_json`."""
        return sha256_text(self.to_json())

    def flat_params(self) -> dict[str, str]:
        """The spec flattened by dots (``model.lr``), for run parameters."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: JsonValue) -> None:
            if isinstance(value, dict) and value:
                for key, item in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, item)
            else:
                out[prefix] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)

        walk("", self.body)
        return out

    @property
    def run_name(self) -> str:
        """The MLflow run name: model, feature handler, seed and the hash's first 6 digits
        (``lgbm-alpha158-seed1-3fa2c1``): short, the same for the same task, different for different tasks (the jobs
        of a sweep over any key). A part the spec lacks is left out."""
        parts = [_short_target(self.body.get("model")), _short_target(_handler_features(self.body))]
        seed = self.body.get("seed")
        if isinstance(seed, int | str) and not isinstance(seed, bool):
            parts.append(f"seed{seed}")
        return "-".join([*(p for p in parts if p), self.hash[:6]])


def _handler_features(body: dict[str, JsonValue]) -> JsonValue:
    dataset = body.get("dataset")
    handler = dataset.get("handler") if isinstance(dataset, dict) else None
    return handler.get("features") if isinstance(handler, dict) else None


def _short_target(node: JsonValue) -> str:
    """``app.models.lgbm.LightGBMModel`` → ``lgbm`` (its module), ``app.features.handlers.alpha158`` → ``alpha158``."""
    target = node.get("_target_") if isinstance(node, dict) else None
    if not isinstance(target, str) or not target:
        return ""
    module, _, name = target.rpartition(".")
    return name if name[:1].islower() else module.rpartition(".")[2] or name
