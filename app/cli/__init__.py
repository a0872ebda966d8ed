"""The ``qtrain`` command: one module per command group (``run``, ``pool``, the rest in ``main``), argument parsing
and error reporting only; the work lives in the library packages."""

from app.cli.main import console, main

__all__ = ["console", "main"]
