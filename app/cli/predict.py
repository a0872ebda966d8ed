"""``qtrain predict`` and ``qtrain register``: a finished run's model on new dates, and in the model registry."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from app.core.errors import ArtifactNotFoundError, ConfigError
from app.core.settings import Settings


def add_inference_commands(commands: Any) -> None:
    """Add ``predict`` and ``register`` to the ``qtrain`` sub-command parser ``commands``."""
    pred = commands.add_parser(
        "predict",
        help="a run's model on its test segment, other dates or another store -> parquet like its pred.parquet",
    )
    pred.add_argument("run_id", metavar="RUN_ID", help="a FINISHED training run")
    pred.add_argument("--data", type=Path, default=None, help="store directory (default: the run's store)")
    pred.add_argument("--start", default=None, help="first date, YYYY-MM-DD (default: the run's test segment)")
    pred.add_argument(
        "--end", default=None, help="last date (default: the test segment's end; with --start, the store's last day)"
    )
    pred.add_argument("--out", type=Path, required=True, help="output parquet file (column score)")
    pred.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    pred.set_defaults(func=_predict)

    reg = commands.add_parser("register", help="register a run's MLflow model in the MLflow model registry")
    reg.add_argument("run_id", metavar="RUN_ID")
    reg.add_argument("name", metavar="NAME", nargs="?", help="registered model name")
    reg.add_argument("--name", dest="name_option", default=None, help="the same as NAME")
    reg.add_argument(
        "--artifact-path",
        default=None,
        help="register this artifact folder of the run instead of its logged MLflow model (default: the MLflow "
        "model, or the model/ folder of a run that has none)",
    )
    reg.set_defaults(func=_register)


def _predict(args: argparse.Namespace, settings: Settings) -> None:
    from app.config.compose import build_components
    from app.models.base import load_model
    from app.runtime import get_runtime
    from app.tracking.artifacts import stage_object
    from app.workflow.inference import model_folder, plan_prediction, predict, read_run_spec

    if args.out.suffix != ".parquet":
        raise ConfigError(f"--out {args.out}: write predictions to a .parquet file (e.g. --out pred.parquet)")
    started = time.perf_counter()
    runtime = get_runtime(settings)
    recorder, spec = read_run_spec(runtime.tracking(), args.run_id)
    plan = plan_prediction(build_components(spec), data=args.data, start=args.start, end=args.end)
    with tempfile.TemporaryDirectory(prefix="qtrain-predict-") as tmp:
        model = load_model(model_folder(recorder, Path(tmp)))
        scores = predict(plan, model, None if args.no_cache else runtime.feature_cache)
        # the run's own prediction artifact: column score, index (datetime, instrument), written the same way
        staged = stage_object("pred", scores.rename("score").to_frame(), Path(tmp))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staged.local_path, args.out)
    print(
        f"wrote {len(scores)} predictions of run {args.run_id} ({plan.start.date()}..{plan.end.date()}, "
        f"store {plan.store.root}) to {args.out} in {time.perf_counter() - started:.1f}s"
    )


def _register(args: argparse.Namespace, settings: Settings) -> None:
    from app.runtime import get_runtime
    from app.tracking.logged_model import register_logged_model

    name = args.name or args.name_option
    if not name or (args.name and args.name_option and args.name != args.name_option):
        raise ConfigError("qtrain register RUN_ID NAME: give the registered model's name once (NAME or --name)")
    manager = get_runtime(settings).tracking()
    if args.artifact_path is None:
        try:
            version = register_logged_model(manager.client, args.run_id, name)
        except ArtifactNotFoundError:  # a run recorded without one (by hand, or by an older qtrain): its folder
            args.artifact_path = "model"
        else:
            print(f"registered {name} version {version} from run {args.run_id} (its MLflow model)")
            return
    version = manager.register_model(args.run_id, name, artifact_path=args.artifact_path)
    print(f"registered {name} version {version} from run {args.run_id} ({args.artifact_path}/)")
