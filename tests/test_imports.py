"""No import circle anywhere in peft_autoconfig: every module imports alone, and the import graph is acyclic.

Modules are discovered with `pkgutil.walk_packages`, so modules added later are covered without editing this file.
"""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import peft_autoconfig

PACKAGE = "peft_autoconfig"
ROOT = Path(peft_autoconfig.__file__).resolve().parent.parent


def all_modules() -> dict[str, Path]:
    """Module name -> source file, for the package and every module under it."""
    modules = {PACKAGE: Path(peft_autoconfig.__file__)}
    for info in pkgutil.walk_packages(peft_autoconfig.__path__, prefix=f"{PACKAGE}."):
        spec = info.module_finder.find_spec(info.name)
        modules[info.name] = Path(spec.origin)
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, also inside functions (a deferred import still closes a circle at run time), except
    those under `if TYPE_CHECKING:`, which never run."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Edges module -> intra-package module it imports (importing `a.b.c` also runs the packages `a.b` and `a`,
    except those the importer is already inside)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rsplit(".", 1)[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base_parts = package.split(".")
                    base = ".".join(base_parts[: len(base_parts) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            inside = set(_ancestors(name)) | {name}
            for target in targets:
                if target not in modules:
                    continue
                for module in [*_ancestors(target), target]:
                    if module in modules and module not in inside:
                        graph[name].add(module)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_cycle_detection_sees_a_circle_hidden_in_a_function(tmp_path):
    """The check itself: a deferred import that closes a circle (wave 1's registry <-> tuners) is found."""
    package = tmp_path / "pkg"
    (package / "tuners").mkdir(parents=True)
    (package / "__init__.py").write_text("from .tuners import Config\n")
    (package / "registry.py").write_text("def ensure():\n    from .tuners.config import Config\n")
    (package / "tuners" / "__init__.py").write_text("from .config import Config\n")
    (package / "tuners" / "config.py").write_text(
        "from typing import TYPE_CHECKING\nfrom ..registry import ensure\nif TYPE_CHECKING:\n    from .. import x\n"
        "class Config: ...\n"
    )
    modules = {
        "pkg": package / "__init__.py",
        "pkg.registry": package / "registry.py",
        "pkg.tuners": package / "tuners" / "__init__.py",
        "pkg.tuners.config": package / "tuners" / "config.py",
    }
    graph = import_graph(modules)
    assert graph["pkg.tuners.config"] == {"pkg.registry"}  # TYPE_CHECKING imports and the own package are no edges
    assert find_cycle(graph) == ["pkg.tuners", "pkg.tuners.config", "pkg.registry", "pkg.tuners"]


def test_package_import_graph_is_acyclic():
    cycle = find_cycle(import_graph(all_modules()))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


# Runs in a fresh interpreter: loads the third-party libraries once, then forks one child per module, which imports
# that module alone (no peft_autoconfig module loaded before it) and reports a traceback if it fails.
_DRIVER = textwrap.dedent(
    """
    import importlib, json, os, sys, traceback
    modules, third_party = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    for name in third_party:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    failures = {}
    for module in modules:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                importlib.import_module(module)
                message = ""
            except BaseException:
                message = traceback.format_exc()
            os.write(write, message.encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            message = pipe.read()
        os.waitpid(pid, 0)
        if message:
            failures[module] = message
    print(json.dumps(failures))
    """
)


def _third_party(modules: dict[str, Path]) -> list[str]:
    names = set()
    for path in modules.values():
        for node in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif not node.level and node.module:
                names.add(node.module.split(".")[0])
    return sorted(n for n in names - {PACKAGE} if n not in sys.stdlib_module_names)


def test_every_module_imports_alone_in_a_fresh_interpreter():
    modules = all_modules()
    result = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(sorted(modules)), json.dumps(_third_party(modules))],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert not failures, "\n\n".join(f"{name}:\n{trace}" for name, trace in failures.items())
