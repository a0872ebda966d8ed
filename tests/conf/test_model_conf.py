"""Every conf/model option composes and instantiates; bad keys and types fail at build time."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from app.models.base import REGISTRY, Model

CONF = Path(__file__).resolve().parents[2] / "conf"
OPTIONS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def _model(option: str, *overrides: str) -> Model:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+model={option}", "+seed=7", *overrides])
    model = instantiate(cfg.model, _convert_="all")
    assert isinstance(model, Model)
    return model


def test_options_are_the_benchmark_models() -> None:
    assert OPTIONS == ["double_ensemble", "gru", "gru_ts", "lgbm", "mlp"]


@pytest.mark.parametrize("option", OPTIONS)
def test_every_model_option_instantiates(option: str) -> None:
    model = _model(option)
    assert model.registry_name in REGISTRY
    assert model.queue == "cpu"  # device auto on a machine without CUDA
    assert getattr(model, "seed", None) == 7


def test_benchmark_hyperparameters() -> None:
    gru = _model("gru_ts")
    assert (gru.d_feat, gru.lr, gru.early_stop, gru.batch_size, gru.time_series) == (20, 2e-4, 10, 800, True)  # type: ignore[attr-defined]
    tab = _model("gru")
    assert (tab.d_feat, tab.lr, tab.early_stop, tab.time_series) == (6, 1e-3, 20, False)  # type: ignore[attr-defined]
    assert _model("gru_ts", "model.device=cuda").queue == "gpu"


def test_unknown_lightgbm_parameter_is_named() -> None:
    with pytest.raises(InstantiationException, match=r"num_leavs.*num_leaves"):
        _model("lgbm", "+model.num_leavs=31")


def test_wrong_type_is_named() -> None:
    with pytest.raises(InstantiationException, match=r"hidden_size='big' \(str\) is not int"):
        _model("gru_ts", "model.hidden_size=big")


def test_qlib_batching_is_a_key_of_the_torch_options() -> None:
    mlp = _model("mlp", "model.batching=qlib", "model.eval_steps=10")
    assert (mlp.batching, mlp.eval_steps) == ("qlib", 10)  # type: ignore[attr-defined]
    assert all(_model(option, "model.batching=qlib").batching == "qlib" for option in ("gru", "gru_ts"))  # type: ignore[attr-defined]
    assert _model("mlp").batching == _model("gru_ts").batching == "seeded"  # type: ignore[attr-defined]
