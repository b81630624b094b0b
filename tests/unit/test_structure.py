"""The shape the package keeps: small modules and functions, a loop that knows only the backend
protocols, an engine that imports no framework."""

import ast
from pathlib import Path

import specguard_integrations

PKG = Path(specguard_integrations.__file__).parent
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def _modules():
    return sorted(p for p in PKG.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module and name an AST imports, relative ones with their leading dots."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = "." * node.level + (node.module or "")
            found.add(mod)
            found.update(a.name for a in node.names)
    return found


def test_no_module_over_450_lines():
    long = {
        str(p.relative_to(PKG)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long


def test_no_function_over_80_lines():
    long = {}
    for p in _modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{p.relative_to(PKG)}:{node.name}"] = n
    assert not long, long


def test_loop_imports_no_concrete_backend():
    concrete = {
        "LocalCausalLM",
        "LocalDraft",
        "LocalTarget",
        "EndpointDraft",
        "EndpointTarget",
        ".lm",
        ".local",
        ".endpoint",
        ".openai_client",
        "LangChainTarget",
    }
    assert not _imports(PKG / "engine" / "loop.py") & concrete


def test_engine_imports_no_framework():
    for p in (PKG / "engine").glob("*.py"):
        mods = _imports(p)
        bad = [m for m in mods if "langchain" in m or "llama_index" in m]
        assert not bad, (p.name, bad)
