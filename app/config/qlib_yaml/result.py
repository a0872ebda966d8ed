"""The translation's result: the ``qtrain run`` overrides (Qlib's defaults only where they change qtrain's
config, decided by composing it), and the one-line error for what qtrain does not implement."""

from __future__ import annotations

import inspect
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config.qlib_yaml.reading import _NO_DEFAULT, ABSENT, _At, load
from app.config.qlib_yaml.translation import _Collected, _Translator
from app.core.errors import ConfigError

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
