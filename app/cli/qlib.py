"""``qtrain qlib CONFIG.yaml [--run] [OVERRIDE ...]``: a Qlib workflow config as the ``qtrain run`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from app.config.qlib_yaml import translate_file
from app.config.qlib_yaml.reading import EXIT_CONFIG
from app.core.errors import QtrainError


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
