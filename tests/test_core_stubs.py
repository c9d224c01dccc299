"""``multilevel/_core.pyi`` describes exactly what the compiled extension exports."""
from __future__ import annotations

import ast
from pathlib import Path

import multilevel
from multilevel import _core

STUB = Path(multilevel.__file__).with_name("_core.pyi")


def test_stub_lists_every_export_and_method():
    tree = ast.parse(STUB.read_text())
    top = {n.name: n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    assert set(top) == {n for n in dir(_core) if not n.startswith("_")}
    for name, node in top.items():
        assert ast.get_docstring(node), f"{name} has no docstring"
        if isinstance(node, ast.ClassDef):
            methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)} - {"__init__"}
            assert methods == {m for m in dir(getattr(_core, name)) if not m.startswith("_")}, name
