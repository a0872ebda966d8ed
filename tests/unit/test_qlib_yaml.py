"""Qlib workflow configs as `qtrain run` overrides: reading the YAML as Qlib does, the mapping of Qlib's classes and
defaults, the one-line refusals, the printed command, and a Qlib benchmark config run end to end."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.cli.qlib import main
from app.config.jobs import validate_jobs
from app.config.qlib_yaml import LIGHTGBM_DEFAULT_SEEDS, hydra_value, load, translate, translate_file
from app.core.errors import ConfigError
from app.data.synth import SynthSpec, write_synth_market
from tests.small_specs import QUICK_LGBM, SEGMENTS

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "qlib_yaml"
TRANSLATED = ["lightgbm_alpha158", "double_ensemble_alpha158", "gru_alpha158", "mlp_alpha158"]
SEEDS = [f"+model.{k}={v}" for k, v in LIGHTGBM_DEFAULT_SEEDS.items()]


@pytest.fixture(scope="module")
def csi300_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small store whose calendar covers Qlib's CSI300 protocol (2008..2020-08) and that has a csi300 market."""
    root = tmp_path_factory.mktemp("qlib_layout")
    write_synth_market(root, SynthSpec(instruments=6, days=3450, seed=1, start="2007-06-01"))
    shutil.copy(root / "instruments" / "synth.txt", root / "instruments" / "csi300.txt")
    return root


def _spec(overrides: list[str]) -> dict[str, Any]:
    """The resolved task spec `qtrain run` trains for ``overrides`` (after its own validation)."""
    from hydra import compose, initialize_config_dir

    from app.config.compose import conf_dir, prepare_config, task_spec_from_config
    from app.core.settings import load_settings

    validate_jobs(overrides, multirun=False)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    prepare_config(cfg, cfg.hydra.runtime.choices.get("data"), load_settings())
    body: dict[str, Any] = task_spec_from_config(cfg).body
    return body


def _line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_the_file_is_read_as_qlib_reads_it() -> None:
    doc = load(
        "base: &base\n  lr: 2e-4\n  flag: yes\n  on: True\n  day: 2008-01-01\n  n: 0x10\n"
        "child:\n  <<: *base\n  lr: 1.0e-3\n  list: [a, 1, null]\n"
    )
    # YAML 1.2 as Qlib's ruamel loader: 2e-4 is a number, yes/on are strings; dates stay text
    assert doc["base"] == {"lr": 2e-4, "flag": "yes", "on": True, "day": "2008-01-01", "n": 16}
    assert doc["child"] == {"lr": 1e-3, "flag": "yes", "on": True, "day": "2008-01-01", "n": 16, "list": ["a", 1, None]}
    assert doc["child"].lines == {"lr": 9, "flag": 3, "on": 4, "day": 5, "n": 6, "list": 10}  # merged keys: anchor's
    with pytest.raises(ConfigError, match=r"^cfg.yaml:3: not valid YAML: expected ',' or '\]'"):
        load("a: 1\nb: [1\n", "cfg.yaml")


def test_lightgbm_benchmark_translates_to_the_preset_with_qlib_s_seeds(csi300_store: Path) -> None:
    translation = translate_file(CONFIGS / "lightgbm_alpha158.yaml")
    overrides = list(translation.overrides)
    assert overrides[:4] == ["data=qlib_bin", "model=lgbm", "dataset=alpha158", "record=[signal,sig_ana,port_ana]"]
    assert 'data.store.root="~/.qlib/qlib_data/cn_data"' in overrides and "data.market=csi300" in overrides
    assert overrides[-6:] == SEEDS and "experiment_name=workflow" in overrides
    assert any(n.startswith("LGBModel passes LightGBM no seed") for n in translation.notes)
    body = _spec([*overrides, f"data.store.root={csi300_store}"])
    assert body["model"] == {
        "_target_": "app.models.lgbm.LightGBMModel", "loss": "mse", "num_boost_round": 1000,
        "early_stopping_rounds": 50, "seed": 0, "num_threads": 20, "colsample_bytree": 0.8879,
        "learning_rate": 0.2, "subsample": 0.8789, "lambda_l1": 205.6999, "lambda_l2": 580.9768, "max_depth": 8,
        "num_leaves": 210, **LIGHTGBM_DEFAULT_SEEDS,
    }  # fmt: skip
    segments = {"train": ["2008-01-01", "2014-12-31"], "valid": ["2015-01-01", "2016-12-31"],
                "test": ["2017-01-01", "2020-08-01"]}  # fmt: skip
    assert body["dataset"]["segments"] == segments and body["experiment_name"] == "workflow"
    handler = body["dataset"]["handler"]
    assert (handler["market"], handler["start_time"], handler["end_time"]) == ("csi300", "2008-01-01", "2020-08-01")
    assert (handler["fit_start_time"], handler["fit_end_time"]) == ("2008-01-01", "2014-12-31")
    assert handler["infer_processors"] == [] and handler["learn_processors"] == [
        {"_target_": "app.dataset.processors.DropnaLabel"},
        {"_target_": "app.dataset.processors.CSZScoreNorm", "fields_group": "label"},
    ]
    assert [r["_target_"].rsplit(".", 1)[1] for r in body["records"]] == ["SignalRecord", "SigAnaRecord",
                                                                          "PortAnaRecord"]  # fmt: skip
    assert body["records"][2]["config"] == {
        "_target_": "app.evaluation.backtest.BacktestConfig", "topk": 50, "n_drop": 5, "benchmark": "SH000300",
        "account": 100000000, "limit_threshold": 0.095, "open_cost": 0.0005, "close_cost": 0.0015, "min_cost": 5,
        "start": "2017-01-01", "end": "2020-08-01", "deal_price": "close",
    }  # fmt: skip


def test_double_ensemble_benchmark_keeps_qlib_s_rounds_without_early_stopping(csi300_store: Path) -> None:
    translation = translate_file(CONFIGS / "double_ensemble_alpha158.yaml")
    assert "model=double_ensemble" in translation.overrides and "+model.verbosity=-1" in translation.overrides
    body = _spec([*translation.overrides, f"data.store.root={csi300_store}"])
    model = body["model"]
    assert (model["epochs"], model["early_stopping_rounds"], model["num_models"], model["decay"]) == (28, None, 3, 0.5)
    assert model["sub_weights"] == [1, 1, 1] and model["sample_ratios"] == [0.8, 0.7, 0.6, 0.5, 0.4]
    assert {k: model[k] for k in LIGHTGBM_DEFAULT_SEEDS} == LIGHTGBM_DEFAULT_SEEDS and model["verbosity"] == -1


def test_gru_benchmark_translates_windows_processors_and_label(csi300_store: Path) -> None:
    translation = translate_file(CONFIGS / "gru_alpha158.yaml")
    assert "model=gru_ts" in translation.overrides and any(n.startswith("GRU seeds nothing") for n in translation.notes)
    body = _spec([*translation.overrides, f"data.store.root={csi300_store}"])
    assert body["dataset"]["step_len"] == 20
    model = body["model"]
    assert (model["d_feat"], model["lr"], model["early_stop"], model["batch_size"], model["n_epochs"]) == (
        20, 2e-4, 10, 800, 200)  # fmt: skip
    assert (model["device"], model["num_workers"], model["time_series"], model["clip_value"]) == ("auto", 20, True, 3.0)
    assert model["batching"] == "qlib"  # Qlib's shuffles and dropout draws: Qlib's weights given the same seed
    handler = body["dataset"]["handler"]
    assert handler["features"]["label"] == {"LABEL0": "Ref($close, -2) / Ref($close, -1) - 1"}
    filter_col, robust, fillna = handler["infer_processors"]
    assert filter_col["_target_"].endswith(".FilterCol") and len(filter_col["col_list"]) == 20
    # Qlib hands the handler's fit window to the processors that take one
    assert robust == {"_target_": "app.dataset.processors.RobustZScoreNorm", "fields_group": "feature",
                      "clip_outlier": True, "fit_start_time": "2008-01-01", "fit_end_time": "2014-12-31"}  # fmt: skip
    assert fillna == {"_target_": "app.dataset.processors.Fillna", "fields_group": "feature"}
    assert handler["learn_processors"][1] == {"_target_": "app.dataset.processors.CSRankNorm", "fields_group": "label"}


def test_mlp_benchmark_translates_steps_processors_and_process_type(csi300_store: Path) -> None:
    translation = translate_file(CONFIGS / "mlp_alpha158.yaml")
    overrides = list(translation.overrides)
    assert "model=mlp" in overrides and "+dataset.handler.process_type=independent" in overrides
    assert any(n.startswith("DNNModelPytorch seeds nothing") for n in translation.notes)
    assert not any("not a multiple" in n for n in translation.notes)  # 8000 = 400 x 20
    body = _spec([*overrides, f"data.store.root={csi300_store}"])
    model = body["model"]
    assert model["_target_"] == "app.models.mlp.MLPModel" and (model["d_feat"], model["hidden_sizes"]) == (157, [256])
    assert (model["lr"], model["optimizer"], model["batch_size"], model["weight_decay"]) == (0.002, "adam", 8192, 2e-4)
    assert (model["dropout"], model["device"], model["clip_value"]) == (0.05, "auto", None)
    # max_steps=8000 random batches evaluated every 20 (Qlib's default), early stop after 50 evaluations without
    # improvement, lr halved after 10 (Qlib's default scheduler): 400 epochs of 20 of Qlib's batches
    assert (model["batching"], model["eval_steps"], model["n_epochs"]) == ("qlib", 20, 400)
    assert (model["early_stop"], model["lr_patience"]) == (50, 10)
    handler = body["dataset"]["handler"]
    assert handler["process_type"] == "independent"
    drop = {"_target_": "app.dataset.processors.DropCol", "col_list": ["VWAP0"]}
    assert handler["infer_processors"] == [
        drop, {"_target_": "app.dataset.processors.CSZFillna", "fields_group": "feature"}
    ]  # fmt: skip
    assert handler["learn_processors"] == [
        drop, {"_target_": "app.dataset.processors.DropnaProcessor", "fields_group": "feature"},
        {"_target_": "app.dataset.processors.DropnaLabel"},
        {"_target_": "app.dataset.processors.CSZScoreNorm", "fields_group": "label"},
    ]  # fmt: skip
    assert body["dataset"]["step_len"] is None


@pytest.mark.parametrize(
    ("steps", "epochs", "eval_steps", "note"),
    [({"max_steps": 300}, 15, 20, None),  # Qlib's default eval_steps
     ({"max_steps": 1010, "eval_steps": 100}, 10, 100,
      "max_steps=1010 is not a multiple of eval_steps=100: qtrain trains 10 epochs of 100 steps (1000 steps); "
      "Qlib's last 10 steps and the evaluation after them are not made"),
     ({"max_steps": 7, "eval_steps": 20}, 1, 7, None)],  # Qlib evaluates once, at step 7: one epoch of 7 steps
)  # fmt: skip
def test_mlp_steps_become_epochs_of_eval_steps_batches(
    steps: dict[str, int], epochs: int, eval_steps: int, note: str | None
) -> None:
    doc = load((CONFIGS / "mlp_alpha158.yaml").read_text())
    kwargs = doc["task"]["model"]["kwargs"]
    del kwargs["max_steps"]
    kwargs.update(steps)
    translation = translate(doc)
    assert f"model.n_epochs={epochs}" in translation.overrides
    assert f"model.eval_steps={eval_steps}" in translation.overrides or eval_steps == 20  # 20: the preset's
    assert [n for n in translation.notes if "not a multiple" in n] == ([] if note is None else [note])


def test_what_qtrain_lacks_of_the_mlp_layout_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (CONFIGS / "mlp_alpha158.yaml").read_text()
    text = text.replace('"class" : "CSZFillna"', '"class" : "TanhProcess"').replace("max_steps: 8000", "max_steps: 0")
    text = text.replace('process_type: "independent"', 'process_type: "shared"\n    shared_processors: [ProcessInf]')
    path = tmp_path / "mlp.yaml"
    path.write_text(text.replace("data_parall", "x").replace("GPU: 0", "GPU: 0\n            data_parall: true"))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {path}: 5 settings qtrain does not implement")
    handler = "task.dataset.kwargs.handler.kwargs"
    for where in (
        f"line {_line(path, 'TanhProcess')} {handler}.infer_processors[1].class: processor TanhProcess",
        f"line {_line(path, 'process_type')} {handler}.process_type: 'shared' is not a process type of Qlib's",
        f"line {_line(path, 'shared_processors')} {handler}.shared_processors: ['ProcessInf'] is not implemented",
        f"line {_line(path, 'max_steps')} task.model.kwargs.max_steps: max_steps=0: qtrain takes a whole number",
        f"line {_line(path, 'data_parall')} task.model.kwargs.data_parall: True is not implemented by qtrain",
    ):
        assert where in err
    assert "(qtrain's processors: DropnaLabel, DropnaProcessor, DropCol, CSZFillna, CSZScoreNorm" in err


def test_qlib_defaults_fill_what_the_file_leaves_unset() -> None:
    doc = load(
        "task:\n"
        "  model: {class: LGBModel, module_path: qlib.contrib.model.gbdt, kwargs: {num_leaves: 31, seed: 7}}\n"
        "  dataset:\n"
        "    class: DatasetH\n"
        "    module_path: qlib.data.dataset\n"
        "    kwargs:\n"
        "      handler: {class: Alpha360, module_path: qlib.contrib.data.handler, kwargs: {start_time: 2008-01-01,\n"
        "                end_time: 2020-08-01, fit_start_time: 2008-01-01, fit_end_time: 2014-12-31}}\n"
        "      segments: {train: [2008-01-01, 2014-12-31], test: [2017-01-01, 2020-08-01]}\n"
        "  record:\n"
        "    - {class: SignalRecord, module_path: qlib.workflow.record_temp}\n"
        "    - class: PortAnaRecord\n"
        "      module_path: qlib.workflow.record_temp\n"
        "      kwargs: {config: {strategy: {class: TopkDropoutStrategy, module_path: qlib.contrib.strategy,\n"
        "               kwargs: {signal: <PRED>, topk: 30, n_drop: 3}}, backtest: {start_time: null,\n"
        "               end_time: null, exchange_kwargs: {limit_threshold: null}}}}\n"
    )
    overrides = translate(doc).overrides
    assert "seed=7" in overrides and not any("_seed=" in o for o in overrides)  # Qlib passes the given seed
    # Qlib passes LightGBM only its kwargs: the preset's other parameters go
    assert [o for o in overrides if o.startswith("~model.")] == [
        f"~model.{k}" for k in ("colsample_bytree", "learning_rate", "subsample", "lambda_l1", "lambda_l2", "max_depth")
    ]
    assert "data.market=csi500" in overrides and "~data.segments.valid" in overrides  # Alpha158/360's default market
    infer = "dataset.handler.infer_processors=[{_target_:app.dataset.processors.ProcessInf},"
    assert any(o.startswith(infer) and "ZScoreNorm,fit_start_time:${dataset.handler.fit_start_time}" in o
               for o in overrides)  # fmt: skip
    config = "record.port_ana.config"
    for expected in (f"{config}.account=1000000000.0", f"{config}.open_cost=0.0015", f"{config}.close_cost=0.0025",
                     f"{config}.limit_threshold=0.095", "experiment_name=workflow"):  # fmt: skip
        assert expected in overrides  # backtest()/Exchange defaults; limit None is the region's (cn)
    assert not any(o.startswith((f"{config}.min_cost", f"+{config}.risk_degree")) for o in overrides)  # same as qtrain


def test_lightgbm_default_seeds_give_the_model_of_no_seed() -> None:
    """What the translation relies on: LightGBM's per-purpose seeds at their defaults override any `seed`."""
    import re

    import numpy as np

    from app.models.lgbm import import_lightgbm

    lgb = import_lightgbm()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8))
    y = x[:, 0] + rng.normal(size=2000)
    params = {"objective": "mse", "verbosity": -1, "num_threads": 1, "bagging_fraction": 0.7, "bagging_freq": 1,
              "feature_fraction": 0.6, "extra_trees": True, "bin_construct_sample_cnt": 300}  # fmt: skip

    def trees(extra: dict[str, int]) -> str:
        booster = lgb.train({**params, **extra}, lgb.Dataset(x, label=y), num_boost_round=10)
        return str(booster.model_to_string())

    unseeded = trees({})
    defaults = {k: int(v) for k, v in re.findall(r"\[(\w+_seed): (\d+)\]", unseeded)}
    assert defaults == dict(LIGHTGBM_DEFAULT_SEEDS)
    body = unseeded.split("end of trees")[0]
    assert trees({"seed": 5, **LIGHTGBM_DEFAULT_SEEDS}).split("end of trees")[0] == body
    assert trees({"seed": 5}).split("end of trees")[0] != body


@pytest.mark.parametrize("name", TRANSLATED)
def test_the_printed_command_round_trips_through_a_shell(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(CONFIGS / f"{name}.yaml"), "seed=3", "model.num_threads=1"]) == 0
    text = capsys.readouterr().out
    wanted = ["qtrain", "run", *translate_file(CONFIGS / f"{name}.yaml").overrides, "seed=3", "model.num_threads=1"]
    assert shlex.split(text.replace("\\\n", ""), comments=True) == wanted
    echo = subprocess.run(["bash", "-c", 'qtrain() { printf "%s\\0" qtrain "$@"; }\n' + text],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert echo.stdout.split("\0")[:-1] == wanted


@pytest.mark.parametrize(
    ("value", "text"),
    [("~/.qlib/cn_data", '"~/.qlib/cn_data"'), ("/data/cn", "/data/cn"), ("2008-01-01", "2008-01-01"),
     ("true", '"true"'), ("a 'b'", "\"a 'b'\""), ('say "x"', "'say \"x\"'"), (None, "null"), (2e-4, "0.0002"),
     ({"A": [1, "x y"]}, '{A:[1,"x y"]}'), ("${dataset.handler.fit_end_time}", "${dataset.handler.fit_end_time}")],
)  # fmt: skip
def test_values_are_written_in_hydra_s_grammar(value: Any, text: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert hydra_value(value) == text
    if not isinstance(value, str) or not value.startswith("$"):
        (parsed,) = OverridesParser.create().parse_overrides([f"key={text}"])
        assert parsed.value() == value


def test_an_unknown_class_is_one_line_naming_it_and_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (CONFIGS / "lightgbm_alpha158.yaml").read_text()
    path = tmp_path / "xgb.yaml"
    path.write_text(text.replace("class: LGBModel", "class: XGBModel").replace("qlib.contrib.model.gbdt", "x.y"))
    assert main([str(path)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.splitlines()) == 1
    assert out.err.startswith(
        f"error: {path}:{_line(path, 'class: XGBModel')}: task.model.class: model class XGBModel (x.y) is not "
        "implemented by qtrain (qtrain's models: LGBModel (qlib.contrib.model.gbdt), DEnsembleModel"
    )


def test_an_unknown_kwarg_in_an_anchor_is_named_where_the_anchor_defines_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (CONFIGS / "lightgbm_alpha158.yaml").read_text()
    path = tmp_path / "cfg.yaml"
    path.write_text(text.replace("    instruments: *market\n", "    instruments: *market\n    filter_pipe: [x]\n"))
    assert main([str(path)]) == 2
    assert capsys.readouterr().err == (
        f"error: {path}:{_line(path, 'filter_pipe')}: task.dataset.kwargs.handler.kwargs.filter_pipe: ['x'] is not "
        "implemented by qtrain (only None)\n"
    )
    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: cannot read the Qlib workflow config" in capsys.readouterr().err


@pytest.mark.slow
def test_the_lightgbm_benchmark_config_runs_end_to_end(tmp_path: Path) -> None:
    from app.tracking.manager import ExpManager

    market = tmp_path / "market"
    write_synth_market(market, SynthSpec(instruments=25, days=360, seed=8))
    # Qlib's CSI300 dates and sizes do not fit a 360-day sample: the same overrides the other e2e tests use
    fit = ["dataset.handler.start_time=2015-01-05", "dataset.handler.end_time=2016-05-31",
           "dataset.handler.fit_start_time=2015-01-05", "dataset.handler.fit_end_time=2015-10-30",
           "record.port_ana.config.start=2016-01-04", "record.port_ana.config.end=2016-05-31"]  # fmt: skip
    extra = [f"data.store.root={market}", "data.market=synth", SEGMENTS, *fit, *QUICK_LGBM]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_"))}
    qtrain = Path(sys.executable).with_name("qtrain")
    out = subprocess.run(
        [str(qtrain), "qlib", str(CONFIGS / "lightgbm_alpha158.yaml"), "--run", *extra],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("# ") and "qtrain run \\\n  data=qlib_bin \\\n" in out.stdout
    assert "finished" in out.stdout and "Rank IC" in out.stdout
    runs = ExpManager(f"sqlite:///{tmp_path / 'mlflow.db'}").search_records(["workflow"])
    assert list(runs["status"]) == ["FINISHED"]
    params = runs.iloc[0]
    assert (params["params.model.bagging_seed"], params["params.model.feature_fraction_seed"]) == ("3", "2")
    assert (params["params.data.market"], params["params.model.num_threads"]) == ("synth", "1")
    assert json.loads(params["params.dataset.segments.test"].replace("'", '"')) == ["2016-01-04", "2016-05-31"]
    assert "metrics.1day.excess_return_with_cost.annualized_return" in runs


@pytest.mark.slow
def test_the_mlp_benchmark_config_runs_end_to_end(tmp_path: Path) -> None:
    """DropCol, CSZFillna and DropnaProcessor on Alpha158, the independent views and Qlib's batches, through a run."""
    from app.tracking.manager import ExpManager

    market = tmp_path / "market"
    write_synth_market(market, SynthSpec(instruments=25, days=360, seed=8))
    fit = ["dataset.handler.start_time=2015-01-05", "dataset.handler.end_time=2016-05-31",
           "dataset.handler.fit_start_time=2015-01-05", "dataset.handler.fit_end_time=2015-10-30",
           "record.port_ana.config.start=2016-01-04", "record.port_ana.config.end=2016-05-31"]  # fmt: skip
    quick = ["model.n_epochs=3", "model.eval_steps=4", "model.batch_size=256", "model.device=cpu",
             "record.port_ana.config.topk=5", "record.port_ana.config.n_drop=1"]  # fmt: skip
    extra = [f"data.store.root={market}", "data.market=synth", SEGMENTS, *fit, *quick]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_"))}
    qtrain = Path(sys.executable).with_name("qtrain")
    out = subprocess.run(
        [str(qtrain), "qlib", str(CONFIGS / "mlp_alpha158.yaml"), "--run", *extra],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "finished" in out.stdout and "Rank IC" in out.stdout
    runs = ExpManager(f"sqlite:///{tmp_path / 'mlflow.db'}").search_records(["workflow"])
    assert list(runs["status"]) == ["FINISHED"]
    params = runs.iloc[0]
    assert (params["params.model.batching"], params["params.model.d_feat"]) == ("qlib", "157")  # VWAP0 dropped
    assert params["params.dataset.handler.process_type"] == "independent"


@pytest.mark.qlib
def test_qlib_reads_the_fixtures_as_qtrain_does(qlib_python: Path) -> None:
    """Qlib's own loader (ruamel, YAML 1.2, as qrun reads a workflow config) gives the same documents."""
    script = (
        "import json, sys, datetime\n"
        "from ruamel.yaml import YAML\n"
        "docs = {p: YAML(typ='safe', pure=True).load(open(p).read()) for p in sys.argv[1:]}\n"
        "json.dump(docs, sys.stdout, default=lambda d: d.isoformat())\n"
    )
    paths = sorted(str(p) for p in CONFIGS.glob("*.yaml"))
    out = subprocess.run([qlib_python, "-c", script, *paths], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {p: load(Path(p).read_text()) for p in paths}


_QLIB_DEFAULTS = r"""
import importlib, inspect, json, sys
import qlib.cli.run
from qlib.config import QSettings, _default_region_config
from qlib.workflow.record_temp import PortAnaRecord


def obtain(path):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def default(path, name):
    owner = obtain(path)
    functions = [k.__init__ for k in inspect.getmro(owner)] if inspect.isclass(owner) else [owner]
    if path == "qlib.backtest.get_exchange":  # its **kwargs go to Exchange
        functions.append(obtain("qlib.backtest.exchange.Exchange").__init__)
    for function in functions:
        param = inspect.signature(function).parameters.get(name)
        if param is not None and param.default is not inspect.Parameter.empty:
            return param.default
    return "<no default>"


record = PortAnaRecord(recorder=None)
fields = ("trade_unit", "limit_threshold", "deal_price")
regions = {k: {f: v[f] for f in fields} for k, v in _default_region_config.items()}
out = {
    "args": {f"{p} {n}": default(p, n) for p, n in json.loads(sys.argv[1])},
    "region": regions,
    "port_ana": {"strategy": record.strategy_config, "backtest": record.backtest_config},
    "provider_uri": QSettings.model_fields["provider_uri"].default,
    "experiment_name": inspect.signature(qlib.cli.run.workflow).parameters["experiment_name"].default,
}
print(json.dumps(out, default=list))
"""


@pytest.mark.qlib
def test_the_tables_hold_qlib_s_own_defaults(qlib_python: Path) -> None:
    """Every 'Qlib's default' the translation fills in is the default in Qlib's code (signatures, region configs,
    PortAnaRecord's default config, qlib.init's provider_uri, qrun's experiment name)."""
    from app.config.qlib_yaml import reading
    from app.config.qlib_yaml import tables as t

    tables = {**t.MODELS, **t.HANDLERS, **t.DATASETS, **t.RECORDS, **t.STRATEGIES, **t.EXECUTORS,
              "qlib.backtest.backtest": t._Class("backtest", None, t._BACKTEST_ARGS),
              "qlib.backtest.get_exchange": t._Class("exchange", None, t._EXCHANGE_ARGS)}  # fmt: skip
    ours = {f"{path} {name}": arg.default for path, spec in tables.items() for name, arg in spec.args.items()
            if arg.default is not reading._NO_DEFAULT}  # fmt: skip
    # defaults Qlib sets in the code, not the signature: sample_ratios in DEnsembleModel's __init__, the backtest's
    # start/end from the predictions in PortAnaRecord
    unsigned = ["qlib.contrib.model.double_ensemble.DEnsembleModel sample_ratios",
                "qlib.contrib.model.DEnsembleModel sample_ratios"]  # fmt: skip
    required = ["qlib.backtest.backtest start_time", "qlib.backtest.backtest end_time"]
    body = {**dict.fromkeys(unsigned), **dict.fromkeys(required, "<no default>")}
    wanted = json.dumps([key.split(" ") for key in ours])
    out = subprocess.run([qlib_python, "-c", _QLIB_DEFAULTS, wanted], capture_output=True, text=True, check=True)
    qlib = json.loads(out.stdout.splitlines()[-1])  # Qlib prints notices about optional models first
    expected = json.loads(json.dumps({k: body.get(k, v) for k, v in ours.items()}))
    assert qlib["args"] == expected
    assert qlib["region"] == reading.REGION_EXCHANGE and qlib["port_ana"] == t._PORT_ANA_DEFAULT
    assert (qlib["provider_uri"], qlib["experiment_name"]) == (reading.QLIB_PROVIDER_URI, reading.QLIB_EXPERIMENT)
