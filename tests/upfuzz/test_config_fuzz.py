"""Every key of the gateway's config, fed a wrong type, an unknown neighbour or an absurd number,
fails at load time with a `ConfigError` naming its path; `kvgate gateway --config` says so in one
line and exits 2, with no traceback. (tests/gateway/test_config.py has the hand-picked cases;
these are generated from the schema, so a new key is covered by itself.)
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from msgspec import inspect as mi

from config.kvgate import KvgateConfig
from config.loader import ConfigError, build

ROOT = Path(__file__).resolve().parents[2]
Path_ = tuple[Any, ...]  # keys, and (tag_field, tag) pairs where a tagged union picks a struct


def leaves(t: mi.Type, path: Path_ = ()) -> list[tuple[Path_, mi.Type]]:
    """Every scalar key under the struct type `t` (each member of a tagged union included)."""
    if isinstance(t, mi.StructType):
        return [leaf for f in t.fields for leaf in leaves(f.type, (*path, f.name))]
    members = t.types if isinstance(t, mi.UnionType) else ()
    structs = [m for m in members if isinstance(m, mi.StructType)]
    if structs:
        return [leaf for m in structs for leaf in leaves(m, (*path, (m.tag_field, m.tag)))]
    return [(path, t)]


def nested(path: Path_, value: Any) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    keys = [k for k in path if not isinstance(k, tuple)]
    for i, key in enumerate(path):
        if isinstance(key, tuple):
            node[key[0]] = key[1]
        elif key == keys[-1] and i == len(path) - 1:
            node[key] = value
        else:
            node = node.setdefault(key, {})
    return root


def dotted(path: Path_) -> str:
    return ".".join(k for k in path if not isinstance(k, tuple))


def kinds(t: mi.Type) -> set[type]:
    members = t.types if isinstance(t, mi.UnionType) else (t,)
    return {type(m) for m in members}


GATEWAY = [(("gateway", *p), t) for p, t in leaves(mi.type_info(KvgateConfig).fields[0].type)]


def wrong_type(t: mi.Type) -> Any:
    """A value of a type the key does not take."""
    k = kinds(t)
    if mi.StrType in k or mi.LiteralType in k:
        return [["not", "a", "string"]]
    if k & {mi.DictType, mi.VarTupleType, mi.ListType}:
        return 12.5
    return "twelve"


@pytest.mark.parametrize(("path", "t"), GATEWAY, ids=[dotted(p) for p, _ in GATEWAY])
def test_a_wrong_type_names_its_path(path: Path_, t: mi.Type) -> None:
    with pytest.raises(ConfigError) as info:
        build(nested(path, wrong_type(t)), KvgateConfig)
    assert f"`$.{dotted(path)}" in str(info.value), str(info.value)


NUMERIC = [(p, t) for p, t in GATEWAY if kinds(t) & {mi.FloatType, mi.IntType}]
ABSURD = [math.nan, math.inf, -math.inf, -1e12]


@pytest.mark.parametrize("value", ABSURD, ids=["nan", "inf", "-inf", "-1e12"])
def test_absurd_numbers_are_refused(value: float) -> None:
    """No key takes NaN, an infinity or -1e12: each would start a gateway that misbehaves (an
    infinite probe timeout raised in aiohttp at start, a NaN threshold never hits)."""
    accepted = []
    for path, t in NUMERIC:
        v: Any = value
        if kinds(t) == {mi.IntType} or kinds(t) == {mi.IntType, mi.NoneType}:
            if not math.isfinite(value):
                continue  # an int key refuses a float anyway (the wrong-type test)
            v = int(value)
        try:
            build(nested(path, v), KvgateConfig)
        except ConfigError as exc:
            assert f"`$.{dotted(path)}" in str(exc), str(exc)
        else:
            accepted.append(dotted(path))
    assert not accepted, f"{value} accepted at {accepted}"


SECTIONS = sorted(
    {path[: i + 1] for path, _ in GATEWAY for i in range(len(path) - 1)},
    key=lambda p: (len(p), [str(k) for k in p]),
)
# Plain sections only: a tagged union (`routing`) needs its `type` first (test_config.py).
UNIONS = {path[:i] for path, _ in GATEWAY for i, k in enumerate(path) if isinstance(k, tuple)}
SECTIONS = [s for s in SECTIONS if not isinstance(s[-1], tuple) and s not in UNIONS]


@pytest.mark.parametrize("section", SECTIONS, ids=[dotted(s) for s in SECTIONS])
def test_an_unknown_key_names_its_section(section: Path_) -> None:
    with pytest.raises(ConfigError) as info:
        build(nested((*section, "no_such_key_s"), 1), KvgateConfig)
    message = str(info.value)
    assert "no_such_key_s" in message and f"`$.{dotted(section)}`" in message, message


@pytest.mark.parametrize("section", SECTIONS, ids=[dotted(s) for s in SECTIONS])
def test_an_empty_section_loads_and_null_is_refused(section: Path_) -> None:
    # `{}` is the section struct's own defaults (which may differ from the parent's default
    # instance: an empty `semantic_cache.fallback` is cacheable, an absent one is not).
    assert isinstance(build(nested(section, {}), KvgateConfig), KvgateConfig)
    with pytest.raises(ConfigError, match=f"`\\$.{dotted(section)}`"):
        build(nested(section, None), KvgateConfig)


BAD_FILES = {
    "unknown_key": ("gateway:\n  upstream:\n    read_timout_s: 3\n", "$.gateway.upstream"),
    "wrong_type": ("gateway:\n  health: {interval_s: soon}\n", "$.gateway.health.interval_s"),
    "null_section": ("gateway:\n  health:\n", "$.gateway.health"),
    "infinite": ("gateway:\n  health: {timeout_s: .inf}\n", "$.gateway.health.timeout_s"),
    "nan": ("gateway:\n  semantic_cache: {fallback: {threshold: .nan}}\n", "threshold"),
    "bad_yaml": ("gateway: {port: [\n", "invalid YAML"),
    "not_a_mapping": ("- gateway\n", "top level must be a mapping"),
    "bad_union_tag": ("gateway:\n  routing: {type: lmetrik}\n", "$.gateway.routing.type"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_kvgate_gateway_refuses_a_bad_config_in_one_line(tmp_path: Path, name: str) -> None:
    text, expected = BAD_FILES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    argv = [sys.executable, "-m", "kvgate", "gateway", "--config", str(path)]
    argv += ["--port", "0", "--worker", "http://127.0.0.1:9"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.startswith("kvgate: "), proc.stderr[-2000:]
