"""The package's layers: data flow down, and no import cycle.

The imports of every module of ``multilevel`` are read with ``ast`` -- at module level and
inside functions and ``if TYPE_CHECKING`` blocks alike -- and checked against the layer order
that README.md ("Layout") and ``../shared/DESIGN.md`` give:

    errors, control  <  formula  <  design  <  covariance, families  <  engine  <  results
    <  models  <  inference  <  toolkit  <  report  <  the package's front
    (``multilevel/__init__.py``)  <  app

(``datasets`` -- bundled example data and simulators -- sits at the bottom with errors.)

A module may import its own layer and the layers below, with no exception: the convenience
methods on fit objects (``fit.summary()``, ``fit.confint()``, ...) in
``multilevel.results.methods`` call inference and report through a table that the package's
front fills (``provide``), not through imports.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import multilevel

PKG = Path(multilevel.__file__).resolve().parent

#: layer of each top-level name inside the package (the rank orders them, ties are one layer)
LAYERS: dict[str, int] = {
    "errors": 0, "control": 0, "_core": 0, "_blas": 0,
    "formula": 1,
    "design": 2,
    "covariance": 3, "families": 3,
    "engine": 4,
    "results": 5,
    "models": 6,
    "inference": 7,
    "toolkit": 8,
    "report": 9,
    # the public name of report.plots (multilevel/plots.py re-exports it)
    "plots": 9,
    # bundled example data and simulators: imports only errors, so any layer may use it
    "datasets": 0,
    # the package's front (multilevel/__init__.py) re-exports the public names; the app (the
    # command line, the HTML report) calls the library through that front
    "__init__": 10,
    "app": 11,
}
#: modules allowed to import upwards, and how far: none
UPWARD_OK: dict[str, set[str]] = {}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(path: Path) -> set[str]:
    """Every multilevel module imported anywhere in the file (absolute names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = _module_name(path)
    pkg = me if _is_package(path) else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "multilevel")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "multilevel":
                continue
            out.add(mod)
            # `from multilevel.x import y` may import the submodule y
            for a in node.names:
                sub = f"{mod}.{a.name}"
                if sub in MODULES:
                    out.add(sub)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                if node.args[0].value.startswith("multilevel"):
                    out.add(node.args[0].value)
    out.discard(me)
    return out


FILES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)
MODULES = {_module_name(p): p for p in FILES}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer_name(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_every_module_has_a_layer():
    unknown = sorted({_layer_name(m) for m in MODULES} - set(LAYERS))
    assert not unknown, f"modules outside the layer map: {unknown}"


def test_imports_flow_down():
    bad = []
    for mod, deps in GRAPH.items():
        mine = _layer_name(mod)
        for dep in deps:
            theirs = _layer_name(dep)
            if theirs not in LAYERS:
                bad.append(f"{mod} imports unknown {dep}")
            elif LAYERS[theirs] > LAYERS[mine] and theirs not in UPWARD_OK.get(mod, set()):
                bad.append(f"{mod} ({mine}) imports {dep} ({theirs})")
    assert not bad, "upward imports:\n  " + "\n  ".join(sorted(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _downward_graph() -> dict[str, set[str]]:
    """The import graph without the documented upward edges of ``results.methods`` (they are
    deferred into method bodies, see ``test_upward_edges_are_deferred``)."""
    return {mod: {d for d in deps if _layer_name(d) not in UPWARD_OK.get(mod, set())}
            for mod, deps in GRAPH.items()}


def test_no_import_cycle():
    # Edges are the imports written in the code: `import multilevel.x.y` also runs the
    # package's __init__, but a package re-exporting its own submodules is not a cycle of
    # the design, so no implicit edge to parent packages is added.
    cycles = _cycles(_downward_graph())
    assert not cycles, "import cycles:\n  " + "\n  ".join(" <-> ".join(c) for c in cycles)


def test_engines_see_arrays_only():
    """The engine layer never imports the design layer (data frames, formulas, column names):
    it is given an EngineInput of arrays."""
    bad = sorted(f"{m} imports {d}" for m, deps in GRAPH.items() if m.startswith("multilevel.engine")
                 for d in deps if _layer_name(d) in ("design", "formula"))
    assert not bad, bad


def test_methods_import_nothing_above_results():
    """The convenience methods reach inference, report and models through the table the
    package's front fills, never through an import (not even one inside a function)."""
    above = {"models", "inference", "toolkit", "report", "app"}
    got = sorted(d for d in GRAPH["multilevel.results.methods"] if _layer_name(d) in above)
    assert not got, got


def test_upward_edges_are_deferred():
    """Any documented upward edge (none today) is imported only inside function bodies, so
    importing a lower layer never loads an upper one."""
    for mod, allowed in UPWARD_OK.items():
        tree = ast.parse(MODULES[mod].read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        # `if TYPE_CHECKING:` blocks never run; other top-level `if` blocks do
        run_ifs = [n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" not in ast.unparse(n.test)]
        for n in ast.walk(ast.Module(body=run_ifs, type_ignores=[])):
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                top.append(n)
        for n in top:
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""]
            for name in names:
                assert _layer_name(name) not in allowed or not name.startswith("multilevel."), \
                    f"{mod} imports {name} at module level"


def test_the_checker_sees_cycles_and_upward_edges():
    # the checks themselves must be able to fail
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    fake = "multilevel.engine.lmm"
    assert "multilevel.results.lmm" not in GRAPH[fake]


@pytest.mark.parametrize("package", sorted(n for n, p in MODULES.items() if _is_package(p) and n != "multilevel"))
def test_each_package_docstring_names_its_layer(package):
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text())) or ""
    assert "Layer" in doc or "layer" in doc, f"{package}/__init__.py does not say which layer it is"


#: names of the package's lazy table that resolve above the front: the explorer only
LAZY_UPWARD_OK = {"explore": "multilevel.app.explore"}


def _lazy_table() -> dict[str, str]:
    tree = ast.parse(MODULES["multilevel"].read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "_LAZY":
            return ast.literal_eval(node.value)
    raise AssertionError("multilevel/__init__.py has no _LAZY table")


def test_lazy_names_point_down():
    """The front's lazy table (``ml.lmer`` -> multilevel.models.lmer, ...) is an import the
    checker above cannot see: its targets are checked here. Only ``ml.explore`` reaches the
    app, documented in the table, and it resolves on first access only (``import
    multilevel`` loads nothing of the app: tests/test_cli.py)."""
    table = _lazy_table()
    assert "lmer" in table  # the parse found the table
    up = {name: mod for name, mod in table.items() if LAYERS[_layer_name(mod)] > LAYERS["__init__"]}
    assert up == LAZY_UPWARD_OK
    for mod in table.values():
        assert mod in MODULES, f"lazy target {mod} is not a module of the package"
