"""Each job's label: what a researcher tells its task by in Flower and ``qtrain pool list`` (``lgbm seed=1``).

A label is the job's model and the overrides that set it apart: those the sweep (or the sweeper) chose for it,
not the ones fixed on the command line, nor Hydra's own (``hydra.*``).
"""

from __future__ import annotations

from collections.abc import Sequence


def job_label(overrides: Sequence[str], command_line: Sequence[str], model: str | None) -> str:
    """The label of the job run with ``overrides``, in a sweep started with ``command_line`` overrides.

    >>> job_label(["seed=1", "model=lgbm", "data=import"], ["seed=0,1", "model=lgbm,mlp", "data=import"], "lgbm")
    'lgbm seed=1'
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    given = parser.parse_overrides(list(command_line))
    swept = {o.get_key_element() for o in given if o.is_sweep_override()}
    fixed = {o.get_key_element() for o in given if not o.is_sweep_override()} - swept
    chosen: dict[str, str] = {}  # key -> its override, the last one of a key (Hydra applies them in order)
    for override in parser.parse_overrides(list(overrides)):
        key = override.get_key_element()
        if key in fixed or key.lstrip("+~").startswith("hydra.") or key.lstrip("+~") == "model":
            continue
        chosen.pop(key, None)
        chosen[key] = override.input_line or ""
    return " ".join([model or "", *chosen.values()]).strip()
