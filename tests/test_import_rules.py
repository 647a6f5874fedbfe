"""policies/ stays pure (no I/O, no torch, no gateway); config/ imports only config."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "policies": {"aiohttp", "httpx", "torch", "gateway", "backends", "gpu_worker", "requests"},
    "config": {"aiohttp", "httpx", "torch", "gateway", "backends", "gpu_worker", "policies"},
    "gpu_worker": {"gateway", "backends"},
    "backends": {"gateway", "gpu_worker"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    bad = {
        str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN[package])
        for f in files
        if _imports(f) & FORBIDDEN[package]
    }
    assert bad == {}
