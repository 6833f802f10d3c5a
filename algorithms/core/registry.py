"""Algorithms register by name with their config class and the task kinds they support.

Built-in algorithms are the modules under `algorithms/`. Third-party algorithms register the
same way from outside the repo: an entry point in the group `ctrlbench.algorithms`, or a file
passed with `--algo-module path.py`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path

from algorithms.core.contract import Algorithm
from algorithms.core.errors import CtrlbenchError

TASK_KINDS = ("offline", "offline-to-online", "sim-to-real", "safe", "offline-safe", "multi-objective")
SAFE_KINDS = ("safe", "offline-safe")  # a cost signal and a budget: online, or from a cost-labelled dataset
ENTRY_POINT_GROUP = "ctrlbench.algorithms"

_REGISTRY: dict[str, type[Algorithm]] = {}
_discovered = False


def register(name: str, *, kinds: tuple[str, ...] = ("offline",)) -> Callable[[type[Algorithm]], type[Algorithm]]:
    """Class decorator: `@register("td3_bc", kinds=("offline",))`."""
    bad = [k for k in kinds if k not in TASK_KINDS]
    if bad:
        raise ValueError(f"unknown task kinds {bad}; known: {TASK_KINDS}")

    def wrap(cls: type[Algorithm]) -> type[Algorithm]:
        if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
            raise TypeError(f"{cls.__name__}.Config must be a dataclass")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"algorithm name '{name}' is already registered by {existing.__module__}")
        cls.name = name
        cls.kinds = tuple(kinds)
        _REGISTRY[name] = cls
        return cls

    return wrap


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = importlib.import_module("algorithms")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg and not info.name.startswith("_"):
            importlib.import_module(f"algorithms.{info.name}")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        ep.load()  # registering happens on import / decoration


def load_algo_module(path: str | Path) -> None:
    """Import a single-file algorithm from outside the repo so that it registers itself."""
    path = Path(path)
    if not path.is_file():
        raise CtrlbenchError(f"--algo-module {path}: no such file")
    name = f"ctrlbench_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def available() -> dict[str, type[Algorithm]]:
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_algorithm(name: str) -> type[Algorithm]:
    algos = available()
    if name not in algos:
        raise CtrlbenchError(f"unknown algorithm '{name}'; known algorithms: {', '.join(algos)}")
    return algos[name]


def overrides_file(cls: type[Algorithm]) -> Path | None:
    """Per-task default overrides: `configs/<name>.yaml` beside the algorithm's module."""
    module = sys.modules.get(cls.__module__)
    if module is None or getattr(module, "__file__", None) is None:
        return None
    return Path(module.__file__).parent / "configs" / f"{cls.name}.yaml"
