"""The package's layering and its import graph: contracts in pyproject.toml, checked by import-linter.

``[tool.importlinter]`` declares the layers (``cli`` on top; ``serve``,
``export``, ``training``, ``evaluation`` and ``report`` below it; then
``predict``, the runtimes and ``artifact``; then ``models``, ``losses``,
``thresholds``, ``data``, ``metrics``; ``schema``, ``fileio``, ``extras`` and
``errors`` at the ground). These tests fail on an upward import, on an
import cycle anywhere in ``src/``, and on a private name imported from
another module; the last test plants an upward import in a copy of the
package to show that the checks catch it.
"""

from __future__ import annotations

import ast
import contextlib
import io
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PYPROJECT = ROOT / "pyproject.toml"


def lint_imports(config: Path = PYPROJECT) -> tuple[int, str]:
    """Run import-linter's contracts (its report, and 0 when every contract is kept)."""
    from importlinter.cli import lint_imports as lint

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = lint(config_filename=str(config), no_cache=True, no_logo=True)
    return code, out.getvalue()


def import_cycles(package: str = "mlic") -> list[list[str]]:
    """Every import cycle among the package's modules (strongly connected components of the graph)."""
    graph = grimp.build_graph(package, cache_dir=None)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    return strongly_connected(edges)


def strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of more than one module, and modules that import
    themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(edges.get(start, ())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(sorted(component))
    return found


def private_imports(src: Path = SRC) -> list[str]:
    """``from mlic.x import _name`` and imports of private modules (``mlic.x._y``) from another module."""
    found = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlic"):
                names = [a.name for a in node.names] + node.module.split(".")[1:]
                bad = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if bad:
                    found.append(f"{path.relative_to(src)}:{node.lineno}: {', '.join(bad)}")
    return found


def test_the_layers_are_kept():
    code, report = lint_imports()
    assert code == 0, report


def test_no_import_cycle_anywhere():
    assert import_cycles() == []


def test_no_private_name_is_imported_from_another_module():
    assert private_imports() == []


def test_a_cycle_is_found():
    edges = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"], "e": ["e"]}
    assert strongly_connected(edges) == [["a", "b", "c"], ["e"]]


def test_a_planted_upward_import_fails_both_checks(tmp_path):
    """A copy of the package where ``mlic.schema`` (the ground) imports ``mlic.cli`` (the top)."""
    shutil.copytree(SRC / "mlic", tmp_path / "src" / "mlic")
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    schema = tmp_path / "src" / "mlic" / "schema.py"
    schema.write_text(schema.read_text(encoding="utf-8") + "\nimport mlic.cli  # planted\n", encoding="utf-8")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_layers import import_cycles, lint_imports
        code, report = lint_imports({str(tmp_path / "pyproject.toml")!r})
        print(report)
        print("cycles:", import_cycles())
        sys.exit(0 if code != 0 else 1)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mlic.schema -> mlic.cli" in result.stdout
    assert "cycles: [[" in result.stdout and "'mlic.schema'" in result.stdout
