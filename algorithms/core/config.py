"""Algorithm configs: typed dataclasses whose field comments are the `--help` text.

Resolution order (later wins): dataclass defaults (the paper's) -> per-task overrides from
`algorithms/configs/<algo>.yaml` -> a user YAML file (`--config`) -> command-line flags.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import inspect
import io
import json
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from algorithms.core.errors import CtrlbenchError


def field_help(cls: type) -> dict[str, str]:
    """Map each field of a config dataclass to the comment written beside it in the source, inherited fields
    included (a subclass that redeclares a field with its own comment wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_help(klass))
    return docs


def _own_field_help(cls: type) -> dict[str, str]:
    """The comments of the fields written in `cls`'s own class body."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    pending: list[str] = []  # comment lines directly above a field
    line_field: dict[int, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for lineno, line in enumerate(source.splitlines(), 1):
        head = line.strip().split(":", 1)[0]
        if head in names and ":" in line:
            line_field[lineno] = head
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        text = tok.string.lstrip("#").strip()
        name = line_field.get(tok.start[0])
        if name is not None:
            docs[name] = text
        elif tok.line.strip().startswith("#"):
            pending.append(text)
            nxt = line_field.get(tok.start[0] + 1)
            if nxt is not None and nxt not in docs:
                docs[nxt] = " ".join(pending)
            if nxt is not None:
                pending = []
    return docs


def _base_type(tp: Any) -> Any:
    """Strip `X | None` / Optional[X] to X."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def parse_value(tp: Any, raw: Any, name: str) -> Any:
    """Coerce a CLI string or YAML value to the field's declared type."""
    tp = _base_type(tp)
    if raw is None:
        return None
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if origin is tuple:
            (elem, *_rest) = typing.get_args(tp) or (str,)
            items = raw if isinstance(raw, (list, tuple)) else [x for x in str(raw).split(",") if x.strip()]
            return tuple(elem(x) for x in items)
        if origin is typing.Literal:
            choices = typing.get_args(tp)
            if raw not in choices:
                raise ValueError(raw)
            return raw
        if tp is int and isinstance(raw, float) and not raw.is_integer():
            raise ValueError(raw)
        if tp is int and isinstance(raw, str):
            return int(float(raw)) if "e" in raw.lower() else int(raw)
        return tp(raw)
    except (TypeError, ValueError):
        raise CtrlbenchError(f"config field '{name}': cannot read {raw!r} as {getattr(tp, '__name__', tp)}") from None


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def task_overrides(overrides_file: Path | None, task_id: str) -> dict[str, Any]:
    """Merge, in file order, every override block whose task pattern matches `task_id`."""
    if overrides_file is None or not overrides_file.exists():
        return {}
    data = yaml.safe_load(overrides_file.read_text()) or {}
    merged: dict[str, Any] = {}
    for pattern, values in data.items():
        if fnmatch.fnmatch(task_id, str(pattern)):
            merged.update(values or {})
    return merged


def load_yaml_config(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file that must hold a mapping (an empty file is {}); `what` names it in the one-line errors."""
    path = Path(path)
    if not path.exists():
        raise CtrlbenchError(f"{what} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise CtrlbenchError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise CtrlbenchError(f"{what} {path} must be a mapping of key: value")
    return data


def build_config(cls: type, *layers: dict[str, Any]) -> Any:
    """Instantiate `cls` from defaults updated by each layer in turn, with type checks."""
    types_ = field_types(cls)
    values: dict[str, Any] = {}
    for layer in layers:
        for key, raw in layer.items():
            name = key.replace("-", "_")
            if name not in types_:
                known = ", ".join(sorted(types_))
                raise CtrlbenchError(f"unknown config field '{key}' for {cls.__name__}; known fields: {known}")
            values[name] = parse_value(types_[name], raw, name)
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise CtrlbenchError(f"bad config for {cls.__name__}: {e}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short hash of a JSON-serializable object, independent of key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def require(condition: bool, message: str) -> None:
    """Config validation in `__post_init__`: raises ValueError, turned into a one-line CLI error."""
    if not condition:
        raise ValueError(message)
