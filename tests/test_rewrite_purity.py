"""The rewrite engine is pure: no module under `proxy/rewrite/` imports the web server, the
config, metrics, logging or anything that does I/O, nor calls a built-in that does. The
Responses bridge (`proxy/bridge/`) is held to the same rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROXY = Path(__file__).resolve().parent.parent / "proxy"
ENGINE = PROXY / "rewrite"
PURE_MODULES = [*sorted(ENGINE.glob("*.py")), *sorted((PROXY / "bridge").glob("*.py"))]
# What the engine may import of the project: its own modules and the pure helpers.
PROJECT_ALLOWED = (
    "proxy.rewrite",
    "proxy.bridge",
    "proxy.errors",
    "proxy.jsonutil",
    "proxy.cache",
)
# Outside libraries that do I/O, run servers or observe; anything of the project but the above.
FORBIDDEN = (
    "aiohttp", "asyncio", "http", "io", "logging", "os", "pathlib", "prometheus_client",
    "shutil", "socket", "ssl", "structlog", "subprocess", "sys", "tempfile", "urllib", "yaml",
)  # fmt: skip
IO_BUILTINS = frozenset({"open", "print", "input", "exec", "eval", "__import__"})


def imported(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from proxy import jsonutil` imports the module proxy.jsonutil
            parent = node.module == "proxy"
            names += [f"proxy.{a.name}" for a in node.names] if parent else [node.module]
    return names


def is_forbidden(name: str) -> bool:
    if name == "proxy" or name.startswith("proxy."):
        return not any(name == ok or name.startswith(ok + ".") for ok in PROJECT_ALLOWED)
    return any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)


@pytest.mark.parametrize("module", PURE_MODULES, ids=lambda path: path.name)
def test_the_engine_imports_nothing_that_does_io(module: Path) -> None:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    assert [name for name in imported(tree) if is_forbidden(name)] == []
    calls = [
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    assert IO_BUILTINS.isdisjoint(calls)


def test_the_check_itself_sees_a_forbidden_import() -> None:
    assert is_forbidden("aiohttp.web")
    assert is_forbidden("proxy.config")
    assert is_forbidden("proxy.metrics")
    assert is_forbidden("logging")
    assert not is_forbidden("proxy.rewrite.tools")
    assert not is_forbidden("proxy.errors")
    assert not is_forbidden("pydantic")
    assert imported(ast.parse("import os\nfrom proxy.config import Route")) == [
        "os",
        "proxy.config",
    ]
