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


SCRIPTS = PKG.parent / "scripts"


def _sized():
    """The package's modules and the scripts' (training lives there): one size rule for all."""
    return _modules() + sorted(SCRIPTS.glob("*.py"))


def _name(p: Path) -> str:
    return str(p.relative_to(PKG.parent))


def test_no_module_over_450_lines():
    long = {
        _name(p): n for p in _sized() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long


def test_no_function_over_80_lines():
    long = {}
    for p in _sized():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{_name(p)}:{node.name}"] = n
    assert not long, long


def test_the_size_rules_see_the_scripts():
    assert {"train_pair.py", "pair_data.py"} <= {p.name for p in _sized()}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in _modules()}


def _own(name: str) -> str | None:
    """The package module `name` refers to (a name inside a module counts as the module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _lazy_targets(tree: ast.Module, package: str) -> list[str]:
    """Modules a package's lazy-attribute map (`_LAZY = {...}` or `lazy(__name__, {...})`)
    imports on use: they count as imports."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for v in node.values:
                if isinstance(v, ast.Constant) and isinstance(v.value, str):
                    value = v.value
                    if value.startswith("."):
                        found.append(package + value)
                    elif value.startswith("specguard_integrations."):
                        found.append(value)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> package modules it imports, at any level: top, inside functions, under
    TYPE_CHECKING, and through lazy-attribute maps."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        targets: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                for a in node.names:  # `from . import x` imports module x, not the package
                    targets.append(f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod)
        if is_pkg:
            targets += _lazy_targets(tree, name)
        graph[name] = {t for t in map(_own, targets) if t and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle_hidden_in_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


ENGINE = "specguard_integrations.engine"
CONCRETE = (
    "specguard_integrations.backends",
    "specguard_integrations.runtime",
    "specguard_integrations.baselines",
    "specguard_integrations.registry",
    "specguard_integrations.langchain",
    "specguard_integrations.llama_index",
    "specguard_integrations.server",
    "specguard_integrations.cli",
)


def test_engine_imports_no_backend_runtime_or_layer_above():
    graph = import_graph()
    bad = {
        m: sorted(t for t in deps if t.startswith(CONCRETE))
        for m, deps in graph.items()
        if m.startswith(ENGINE)
    }
    assert not {m: d for m, d in bad.items() if d}, bad


def test_local_backend_never_imports_the_runtime():
    graph = import_graph()
    local = "specguard_integrations.backends.local"
    bad = {
        m: sorted(t for t in deps if t.startswith("specguard_integrations.runtime"))
        for m, deps in graph.items()
        if m.startswith(local)
    }
    assert not {m: d for m, d in bad.items() if d}, bad


def _probes(path: Path, root: Path = PKG) -> list[str]:
    """`hasattr(x, "lm")` / `getattr(x, "lm", ...)` and the like: reaching through an engine
    or a backend for its local model or its runner instead of asking a declared capability."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("hasattr", "getattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in ("lm", "batcher", "runner", "grouping", "local_model")
        ):
            out.append(f"{path.relative_to(root)}:{node.lineno}")
    return out


def test_no_probe_of_a_concrete_backend():
    found = [hit for p in _modules() for hit in _probes(p)]
    assert found == []


def test_probe_finder_finds_a_probe(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text('def f(e):\n    return getattr(e.target, "lm", None)\n')
    assert _probes(sample, tmp_path) == ["x.py:2"]


def test_engine_imports_no_framework():
    for p in (PKG / "engine").glob("*.py"):
        mods = _imports(p)
        bad = [m for m in mods if "langchain" in m or "llama_index" in m]
        assert not bad, (p.name, bad)


BUILTIN_ERRORS = {
    "ValueError",
    "TypeError",
    "RuntimeError",
    "TimeoutError",
    "ImportError",
    "ModuleNotFoundError",
    "FileNotFoundError",
    "OSError",
    "KeyError",
    "LookupError",
    "Exception",
}


def _builtin_raises(path: Path, root: Path = PKG) -> list[str]:
    """`raise ValueError(...)` and the like: an error the package raises on purpose that a
    user cannot catch with `except SpecGuardError`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id in BUILTIN_ERRORS:
                out.append(f"{path.relative_to(root)}:{node.lineno} {exc.id}")
    return out


def test_every_deliberate_error_has_the_package_root():
    found = [hit for p in _modules() for hit in _builtin_raises(p)]
    assert found == []


def test_builtin_raise_finder_finds_one(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("def f(x):\n    if x:\n        raise ValueError('bad x')\n    raise\n")
    assert _builtin_raises(sample, tmp_path) == ["x.py:3 ValueError"]


def test_every_error_class_descends_from_the_root():
    import inspect

    from specguard_integrations import errors

    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__
    ]
    assert classes and all(issubclass(c, errors.SpecGuardError) for c in classes)
    # the built-in convention is kept alongside
    assert issubclass(errors.InvalidInputError, ValueError)
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.InvalidTypeError, TypeError)
    assert issubclass(errors.GenerationTimeout, TimeoutError)
    assert issubclass(errors.DeadlinePassed, errors.GenerationTimeout)
    assert issubclass(errors.EndpointTimeout, TimeoutError)
    assert issubclass(errors.MissingDependencyError, ImportError)
    # every class the package defines as an exception anywhere descends from the root
    import importlib
    import pkgutil

    import specguard_integrations

    heavy = ("langchain", "llama_index", "server", "tracing", "cli", "bench", "tasks")
    for info in pkgutil.walk_packages(specguard_integrations.__path__, "specguard_integrations."):
        if any(f".{h}" in info.name for h in heavy):
            continue
        mod = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == mod.__name__ and issubclass(cls, BaseException):
                assert issubclass(cls, errors.SpecGuardError) or cls.__name__.startswith("_"), cls


CONSTRUCTORS = {
    "tensor",
    "as_tensor",
    "zeros",
    "ones",
    "full",
    "empty",
    "arange",
    "linspace",
    "eye",
    "rand",
    "randn",
    "randint",
}
# where tensors meet model outputs: every constructor names its device
DEVICE_AWARE = ("backends", "runtime", "engine", "baselines", "bench")


def _deviceless(path: Path, root: Path = PKG) -> list[str]:
    """`torch.zeros(n)` and the like without ``device=``: a tensor made on the CPU that will meet
    CUDA logits or attention (``torch.zeros_like`` and methods of a tensor take its device)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CONSTRUCTORS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch"
            and not any(k.arg == "device" for k in node.keywords)
        ):
            out.append(f"{path.relative_to(root)}:{node.lineno} torch.{node.func.attr}")
    return out


def test_every_tensor_is_made_on_a_named_device():
    found = [
        hit
        for p in _modules()
        if p.relative_to(PKG).parts[0] in DEVICE_AWARE
        for hit in _deviceless(p)
    ]
    assert found == []


def test_deviceless_finder_finds_one(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text(
        "import torch\n"
        "def f(x):\n"
        "    a = torch.zeros(3, device=x.device)\n"
        "    return torch.arange(4), torch.zeros_like(a)\n"
    )
    assert _deviceless(sample, tmp_path) == ["x.py:4 torch.arange"]


ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def _module_paths() -> list[str]:
    """Every module as docs/architecture.md names it: its path under the package
    (`backends/local/model.py`), a package by its directory (`backends/local/`, standing for its
    `__init__.py`), the root package's own `__init__.py` as `__init__.py`."""
    out = []
    for p in _modules():
        rel = p.relative_to(PKG).as_posix()
        if p.name == "__init__.py":
            rel = rel.removesuffix("__init__.py") or "__init__.py"
        out.append(rel)
    return out


def test_module_paths_read_as_the_architecture_page_names_them():
    paths = _module_paths()
    assert {"__init__.py", "backends/", "backends/local/", "backends/local/model.py"} <= set(paths)
    assert "cli/__main__.py" in paths and "backends/local/__init__.py" not in paths


def test_architecture_page_names_every_module():
    text = ARCHITECTURE.read_text()
    missing = [p for p in _module_paths() if f"`{p}`" not in text]
    assert missing == [], f"docs/architecture.md has no line for {missing}"
