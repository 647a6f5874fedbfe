"""YAML (and environment) → typed config. The only place that reads either.

Environment overrides: `KVGATE__GATEWAY__PORT=9000` sets `gateway.port`; the value is parsed as a
YAML scalar (so `true`, `3`, `[a, b]` work). Overrides are applied to the raw mapping before
validation, so an override with a bad path or type fails exactly like a bad YAML key.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

T = TypeVar("T")
ENV_PREFIX = "KVGATE__"


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the path."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def apply_env_overrides(
    data: dict[str, Any],
    environ: Mapping[str, str],
    sections: Collection[str] | None = None,
) -> dict[str, Any]:
    """Apply `KVGATE__…` overrides. With `sections`, only those whose first key is one of them:
    a worker process started by `kvgate up` inherits the gateway's environment, and must take
    its own sections (`worker`, `engine`) without tripping over `KVGATE__GATEWAY__…`."""
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__") if k]
        if not keys or (sections is not None and keys[0] not in sections):
            continue
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: `{key}` is not a mapping in the config")
            node = child
        node[keys[-1]] = yaml.safe_load(raw)
    return data


def build(data: Mapping[str, Any], cls: type[T], source: str = "config") -> T:
    try:
        return msgspec.convert(data, cls, str_keys=True)
    except msgspec.ValidationError as exc:
        # msgspec names the path, e.g. "Object contains unknown field `routng` - at `$.gateway`".
        raise ConfigError(f"{source}: {exc}") from exc


def load(
    path: str | Path | None,
    cls: type[T],
    environ: Mapping[str, str] | None = None,
) -> T:
    """Load `path` (or only defaults when None) into `cls`, with env overrides applied."""
    data = load_yaml(path) if path is not None else {}
    data = apply_env_overrides(data, os.environ if environ is None else environ)
    return build(data, cls, source=str(path) if path is not None else "defaults")
