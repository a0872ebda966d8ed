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

from app.config.qlib_yaml.reading import LIGHTGBM_DEFAULT_SEEDS, load
from app.config.qlib_yaml.result import Translation, hydra_value, translate, translate_file

__all__ = ["LIGHTGBM_DEFAULT_SEEDS", "Translation", "hydra_value", "load", "translate", "translate_file"]
