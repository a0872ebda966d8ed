"""Compile the numba kernels an expression set needs, in parallel processes, before the first evaluation.

numba compiles a kernel on its first call and keeps the machine code in its on-disk cache (``cache=True``),
so only the first feature build after an install (or after a kernel's source changed) pays: ~7 s for
Alpha158's eleven kernels on one core, serial even when the evaluation runs in threads (numba compiles
under one process-wide lock). :func:`precompile` finds which of the needed kernels have no cache entry
yet and compiles them spread over up to ``os.cpu_count()`` processes (this one included), each writing
numba's cache; the evaluation then loads them from the cache. Nothing is spawned when the cache is warm.

The warm-up compiles the signature the evaluation will call (float32 or float64 ``[T, N]`` inputs,
int64 bounds, Python ints/bools/floats for the parameters), found from the expression trees with the
engine's dtype rules. A signature it gets wrong, or a warm-up process that fails, costs nothing but time:
the evaluation compiles whatever is still missing itself, as before.

``python -m app.features.warmup KERNEL:DTYPE[,DTYPE] ...`` runs :func:`main`, the worker.
"""

from __future__ import annotations

import glob
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from app.features.parser import Call, Const, Field, Node, parse, walk

log = logging.getLogger(__name__)

Request = tuple[str, tuple[str, ...]]
"""A kernel name and the dtypes (``"float32"``/``"float64"``) of its array inputs."""

_KERNEL_OF_OP = {
    "Ref": "shift",
    "Delta": "shift",
    "Mean": "roll_mean_sum",
    "Sum": "roll_mean_sum",
    "Std": "roll_var",
    "Var": "roll_var",
    "Count": "roll_count",
    "Max": "roll_max_min",
    "Min": "roll_max_min",
    "Med": "roll_quantile",
    "Quantile": "roll_quantile",
    "Rank": "roll_rank",
    "IdxMax": "roll_argext",
    "IdxMin": "roll_argext",
    "Slope": "roll_regression",
    "Rsquare": "roll_regression",
    "Resi": "roll_regression",
    "WMA": "roll_wma",
    "Mad": "roll_mad",
    "EMA": "ewm_mean",
    "Corr": "roll_corr_cov",
    "Cov": "roll_corr_cov",
}
_MASKED = frozenset({"Gt", "Ge", "Lt", "Le", "Eq", "Ne", "And", "Or", "Not", "If", "Power"})
_BOOLEAN = frozenset({"Gt", "Ge", "Lt", "Le", "Eq", "Ne", "And", "Or", "Not"})
# Rough single-core compile seconds, to balance the processes (measured on Alpha158's kernels).
_COST = {"roll_mean_sum": 1.2, "roll_var": 1.3, "roll_corr_cov": 1.0, "roll_quantile": 0.8, "shift": 0.6}
_DEFAULT_COST = 0.5
WORKER_TIMEOUT_S = 300.0


def requests_for(expressions: Iterable[str]) -> list[Request]:
    """The kernel calls (name, input dtypes) evaluating ``expressions`` makes, in a stable order.

    Raises:
        ExpressionError: an expression does not parse.
    """
    found: dict[Request, None] = {}
    dtypes: dict[str, str | None] = {}
    for text in expressions:
        for node in walk(parse(text)):
            if not isinstance(node, Call):
                continue
            if node.op in _KERNEL_OF_OP:
                arrays = node.args[:2] if node.op in ("Corr", "Cov") else node.args[:1]
                found[(_KERNEL_OF_OP[node.op], tuple(_dtype(a, dtypes) or "float64" for a in arrays))] = None
            if node.op in ("Rsquare", "Corr"):  # their NaN rule reads the inputs' rolling Std
                for a in node.args[: 2 if node.op == "Corr" else 1]:
                    found[("roll_var", (_dtype(a, dtypes) or "float64",))] = None
            if node.op in _MASKED:
                found[("mask_outside", (_dtype(node, dtypes) or "float64",))] = None
    return list(found)


def missing(requests: Iterable[Request]) -> list[Request]:
    """The requests whose kernel has no numba cache index yet (or one older than the kernel's source)."""
    return [r for r in requests if not _is_cached(r[0])]


def precompile(expressions: Iterable[str], jobs: int | None = None) -> list[Request]:
    """Compile the not-yet-cached kernels ``expressions`` need, over ``jobs`` processes (default: the CPUs).

    Returns the requests that were compiled (empty when the cache was warm). Never raises for a failed
    worker: whatever it did not compile is compiled by the evaluation itself.

    Raises:
        ExpressionError: an expression does not parse.
    """
    todo = missing(requests_for(expressions))
    if not todo:
        return []
    started = time.perf_counter()
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
    groups = _balance(todo, jobs)
    # This process takes the largest group; the others start first so they run meanwhile.
    workers = [_spawn(group) for group in groups[1:]]
    compile_requests(groups[0])
    for group, proc in zip(groups[1:], workers, strict=True):
        try:
            _, err = proc.communicate(timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            err = b"timed out"
        if proc.returncode != 0:
            log.warning("kernel warm-up of %s failed (%s); compiling them here", _specs(group), err.decode()[-500:])
    log.info(
        "compiled %d numba kernels (first run; cached from now on) in %.1fs over %d processes",
        len(todo),
        time.perf_counter() - started,
        jobs,
    )
    return todo


def compile_requests(requests: Iterable[Request]) -> None:
    """Call each requested kernel once on a tiny input, which compiles it (or loads it from the cache)."""
    calls = _kernel_calls()
    for name, dtypes in requests:
        calls[name](*(_tiny(d) for d in dtypes))


def _dtype(node: Node, memo: dict[str, str | None]) -> str | None:
    """The engine's result dtype of ``node``: fields float32, rolling float64, numpy promotion otherwise
    (``None`` for a constant, a weak scalar that keeps the other side's dtype)."""
    key = node.canonical
    if key in memo:
        return memo[key]
    result: str | None
    if isinstance(node, Const):
        result = None
    elif isinstance(node, Field):
        result = "float32"
    elif node.op in _KERNEL_OF_OP and node.op not in ("Ref", "Delta"):
        result = "float64"
    elif node.op in _BOOLEAN:
        result = "float32"  # booleans are masked as float32
    else:
        args = node.args[1:] if node.op == "If" else node.args[:1] if node.op in ("Ref", "Delta") else node.args
        kinds = {_dtype(a, memo) for a in args} - {None}
        result = "float64" if "float64" in kinds else "float32" if kinds else None
        if node.op == "Sign":
            result = "float32"
    memo[key] = result
    return result


def _is_cached(name: str) -> bool:
    try:
        from numba.core.caching import FunctionCache

        func = _dispatcher(name).py_func
        cache = FunctionCache(func)  # type: ignore[no-untyped-call]
        module = os.path.splitext(os.path.basename(func.__code__.co_filename))[0]
        pattern = os.path.join(glob.escape(cache.cache_path), f"{module}.{func.__qualname__}-*.nbi")
        source_mtime = os.stat(func.__code__.co_filename).st_mtime
        return any(os.stat(p).st_mtime >= source_mtime for p in glob.glob(pattern))
    except Exception as exc:  # a numba internals change: assume cached, the evaluation compiles if not
        log.debug("cannot inspect numba's cache for %s: %s", name, exc)
        return True


def _dispatcher(name: str) -> Any:
    from app.features import fit_kernels, kernels, order_kernels

    for module in (kernels, fit_kernels, order_kernels):
        if hasattr(module, name):
            return getattr(module, name)
    raise KeyError(name)


def _balance(requests: list[Request], jobs: int) -> list[list[Request]]:
    """Longest first onto the least loaded group; the first group is the most loaded."""
    groups: list[list[Request]] = [[] for _ in range(jobs)]
    loads = [0.0] * jobs
    for req in sorted(requests, key=lambda r: -_COST.get(r[0], _DEFAULT_COST)):
        i = loads.index(min(loads))
        groups[i].append(req)
        loads[i] += _COST.get(req[0], _DEFAULT_COST)
    order = sorted(range(jobs), key=lambda i: -loads[i])
    return [groups[i] for i in order if groups[i]]


def _specs(requests: Iterable[Request]) -> list[str]:
    return [f"{name}:{','.join(dtypes)}" for name, dtypes in requests]


def _spawn(requests: list[Request]) -> subprocess.Popen[bytes]:
    # The worker must import this same ``app`` package, installed or not.
    root = str(Path(__file__).resolve().parents[2])
    code = f"import sys; sys.path.insert(0, {root!r}); import app.features.warmup as w; sys.exit(w.main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *_specs(requests)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _tiny(dtype: str) -> np.ndarray:
    return np.asfortranarray(np.linspace(1.0, 2.0, 16, dtype=dtype).reshape(8, 2))


_LO = np.zeros(2, dtype=np.int64)
_HI = np.full(2, 7, dtype=np.int64)


def _kernel_calls() -> dict[str, Callable[..., object]]:
    from app.features import fit_kernels as fk
    from app.features import kernels as k
    from app.features import order_kernels as ok

    # Parameter types as the engine passes them: Python int (int64), bool, float (float64).
    return {
        "shift": lambda x: k.shift(x, _LO, _HI, 1),
        "roll_mean_sum": lambda x: k.roll_mean_sum(x, _LO, _HI, 3, False),
        "roll_var": lambda x: k.roll_var(x, _LO, _HI, 3, 1, True, k.PANDAS_3_1),
        "roll_count": lambda x: k.roll_count(x, _LO, _HI, 3),
        "roll_max_min": lambda x: ok.roll_max_min(x, _LO, _HI, 3, True),
        "roll_quantile": lambda x: ok.roll_quantile(x, _LO, _HI, 3, 0.5, False),
        "roll_rank": lambda x: ok.roll_rank(x, _LO, _HI, 3),
        "roll_argext": lambda x: ok.roll_argext(x, _LO, _HI, 3, True),
        "roll_regression": lambda x: fk.roll_regression(x, _LO, _HI, 3, fk.SLOPE),
        "roll_wma": lambda x: fk.roll_wma(x, _LO, _HI, 3),
        "roll_mad": lambda x: fk.roll_mad(x, _LO, _HI, 3),
        "ewm_mean": lambda x: k.ewm_mean(x, _LO, _HI, 1.0),
        "roll_corr_cov": lambda a, b: k.roll_corr_cov(a, b, _LO, _HI, 3, True),
        "mask_outside": lambda x: k.mask_outside(x, _LO, _HI),
    }


def main(argv: list[str]) -> int:
    """Worker: compile ``KERNEL:DTYPE[,DTYPE]`` requests into numba's cache."""
    compile_requests((name, tuple(d.split(","))) for name, _, d in (s.partition(":") for s in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
