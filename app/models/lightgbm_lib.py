"""Loading LightGBM (without scikit-learn) and its parameter alias table (without loading LightGBM)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

ALIASES_FILE = Path(__file__).with_name("lightgbm_aliases.json")


def import_lightgbm() -> ModuleType:
    """The ``lightgbm`` module, imported without scikit-learn when scikit-learn is not loaded yet.

    LightGBM's compat layer imports scikit-learn (~1.6 s) only to offer its sklearn-style estimators, which qtrain
    never uses; hiding it during the import leaves the Booster API whole and the estimators unavailable.
    """
    if "lightgbm" in sys.modules or "sklearn" in sys.modules:
        import lightgbm

        return lightgbm
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # `import sklearn` now raises ImportError
    try:
        import lightgbm
    finally:
        del sys.modules["sklearn"]
    return lightgbm


@functools.cache
def lightgbm_aliases() -> Mapping[str, str]:
    """Every parameter name LightGBM accepts (main names and aliases) -> its main name.

    Read from ``lightgbm_aliases.json`` (dumped from the library's ``LGBM_DumpParamAliases``) when it was made
    for the installed LightGBM version, so checking a config does not import LightGBM; otherwise from the
    library itself.
    """
    groups = _shipped_aliases()
    if groups is None:
        import_lightgbm()
        from lightgbm.basic import _ConfigAliases

        groups = _ConfigAliases._get_all_param_aliases()
    return {alias: main for main, names in groups.items() for alias in [main, *names]}


def _shipped_aliases() -> dict[str, list[str]] | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        doc = json.loads(ALIASES_FILE.read_text())
        installed = version("lightgbm")
    except (OSError, ValueError, PackageNotFoundError):
        return None
    return dict(doc["aliases"]) if doc.get("lightgbm") == installed else None
