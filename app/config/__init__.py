"""Hydra glue: find and compose the config tree, turn a composed config into a task spec and its components, check
configs against the classes they build, the sweep summary callback, and Qlib workflow YAML translation."""
