"""The package's layers run one way, and its rooms stay small (``docs/architecture.md``).

Every module of ``cardiacnets/`` is parsed with `ast`; each import — at module
level, inside a function, or ``importlib.import_module("cardiacnets...")`` with
a literal name — is mapped to the folder (or top-level module) it reaches. The
allowed order of those folders is read from the machine-readable block of
``docs/architecture.md``, so the document and this test cannot drift apart:

- a folder imports only folders of lower layers (peers of one layer do not
  import each other), except the edges the document lists as known exceptions;
- the folders' import graph has no cycle;
- every folder is placed in exactly one layer and described in the document;
- no file is longer than the file limit and no function longer than the
  function limit (its docstring not counted) unless the document names it with
  a reason; a named file or function that no longer exceeds its limit must be
  taken off the list.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "cardiacnets"
DOC = REPO_ROOT / "docs" / "architecture.md"
BLOCK = re.compile(r"```yaml\n(# architecture:.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Import:
    """One import of a cardiacnets module: where it stands and what it names."""

    path: str  # file, relative to the repository root
    line: int
    target: str  # dotted module name (or a package prefix for f-strings)
    in_function: bool


@lru_cache(maxsize=1)
def architecture() -> dict:
    """The YAML block of ``docs/architecture.md`` (layers, limits, exceptions)."""
    found = BLOCK.findall(DOC.read_text())
    assert len(found) == 1, f"{DOC} must hold exactly one ```yaml block starting with '# architecture:'"
    return yaml.safe_load(found[0])


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def unit_of_path(path: Path) -> str:
    """The folder below ``cardiacnets/`` a file belongs to, or its own name for a top-level module."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0]


def unit_of_module(name: str) -> str | None:
    """The folder (or top-level module file) a dotted ``cardiacnets...`` name reaches; None outside the package."""
    parts = name.split(".")
    if parts[0] != "cardiacnets":
        return None
    if len(parts) == 1 or not parts[1]:
        return "__init__.py"
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    if (PACKAGE / f"{parts[1]}.py").is_file():
        return f"{parts[1]}.py"
    return "__init__.py"  # a name defined in cardiacnets/__init__.py (``from cardiacnets import __version__``)


def _package_of(path: Path) -> list[str]:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return parts[:-1]


def _literal_module(node: ast.Call) -> str | None:
    """The module named by ``importlib.import_module(<literal or f-string>)``."""
    func = node.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or \
            (isinstance(func, ast.Name) and func.id == "import_module")
    if not named or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = str(arg.values[0].value)
        return prefix.rstrip(".") if prefix.count(".") >= 2 or prefix.endswith(".") else None
    return None


def imports_of(path: Path, source: str | None = None) -> list[Import]:
    """Every import of a cardiacnets module in one file (`source`: its text, read from `path` by default)."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(id(child) for child in ast.walk(node) if child is not node)
    rel = str(path.relative_to(REPO_ROOT))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(path)[: len(_package_of(path)) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from cardiacnets import io`` and ``from . import store`` may import modules, not names.
            by_name = module == "cardiacnets" or (node.level and not node.module)
            names = [f"{module}.{alias.name}" for alias in node.names] if by_name else [module]
        elif isinstance(node, ast.Call):
            literal = _literal_module(node)
            names = [literal] if literal else []
        for name in names:
            if name.split(".")[0] == "cardiacnets":
                found.append(Import(rel, node.lineno, name, id(node) in inside))
    return found


def layer_index() -> dict[str, int]:
    index: dict[str, int] = {}
    for level, layer in enumerate(architecture()["layers"]):
        for unit in layer:
            assert unit not in index, f"{DOC}: {unit} is placed in two layers"
            index[unit] = level
    return index


def all_imports() -> list[Import]:
    return [imp for path in modules() for imp in imports_of(path)]


def known_exceptions() -> set[tuple[str, str]]:
    return {(entry["file"], entry["imports"]) for entry in architecture().get("known_exceptions") or []}


def folder_edges() -> dict[tuple[str, str], list[Import]]:
    edges: dict[tuple[str, str], list[Import]] = {}
    for imp in all_imports():
        source = unit_of_path(REPO_ROOT / imp.path)
        target = unit_of_module(imp.target)
        if target is not None and target != source:
            edges.setdefault((source, target), []).append(imp)
    return edges


# --- the tests ------------------------------------------------------------------------------------------------

def test_every_folder_is_placed_once_and_described():
    index = layer_index()
    units = {unit_of_path(path) for path in modules()}
    assert not units - set(index), f"not placed in a layer of {DOC}: {sorted(units - set(index))}"
    assert not set(index) - units, f"{DOC} places folders that do not exist: {sorted(set(index) - units)}"
    text = DOC.read_text()
    undescribed = [unit for unit in index if f"### `{unit}`" not in text]
    assert not undescribed, f"{DOC} has no '### `name`' section for {undescribed}"


def test_imports_run_down_the_layers():
    index, allowed = layer_index(), known_exceptions()
    wrong = []
    used_exceptions = set()
    for (source, target), found in sorted(folder_edges().items()):
        if index[target] < index[source]:
            continue
        for imp in found:
            if (imp.path, imp.target) in allowed:
                used_exceptions.add((imp.path, imp.target))
                continue
            where = "inside a function" if imp.in_function else "at module level"
            relation = "a peer of its layer" if index[target] == index[source] else "a higher layer"
            wrong.append(f"{imp.path}:{imp.line} imports {imp.target} ({where}): {source} -> {target}, {relation}")
    assert not wrong, "imports against the layer order of docs/architecture.md:\n" + "\n".join(wrong)
    stale = sorted(allowed - used_exceptions)
    assert not stale, f"known exceptions in {DOC} that no longer occur (take them off the list): {stale}"


def test_folders_import_each_other_without_cycles():
    graph: dict[str, set[str]] = {}
    for source, target in folder_edges():
        graph.setdefault(source, set()).add(target)
    # Depth-first search; a back edge closes a cycle.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles between folders: " + "; ".join(" -> ".join(c) for c in cycles)


def _function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def _functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}{node.name}", node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def test_files_and_functions_stay_within_the_size_limits():
    limits = architecture()["size_limits"]
    large_files = architecture().get("large_files") or {}
    large_functions = architecture().get("large_functions") or {}
    too_long, stale = [], []
    for path in modules():
        rel = str(path.relative_to(REPO_ROOT))
        text = path.read_text()
        n_lines = len(text.splitlines())
        if n_lines > limits["file_lines"] and rel not in large_files:
            too_long.append(f"{rel}: {n_lines} lines (limit {limits['file_lines']})")
        if rel in large_files and n_lines <= limits["file_lines"]:
            stale.append(f"{rel} ({n_lines} lines)")
        for name, node in _functions(ast.parse(text)):
            key = f"{rel}::{name}"
            n = _function_lines(node)
            if n > limits["function_lines"] and key not in large_functions:
                too_long.append(f"{key}: {n} lines without its docstring (limit {limits['function_lines']})")
            if key in large_functions and n <= limits["function_lines"]:
                stale.append(f"{key} ({n} lines)")
    named = {**large_files, **large_functions}
    unexplained = [key for key, reason in named.items() if not str(reason or "").strip()]
    missing = [key for key in named if not (REPO_ROOT / key.split("::")[0]).is_file()]
    assert not too_long, "too long and not named in docs/architecture.md:\n" + "\n".join(too_long)
    assert not stale, f"named in {DOC} as too long but within the limit now (take them off): {stale}"
    assert not unexplained, f"named in {DOC} without a reason: {unexplained}"
    assert not missing, f"named in {DOC} but not found: {missing}"


@pytest.mark.parametrize("source, expected", [
    ("import cardiacnets.io.ecg\n", ["cardiacnets.io.ecg"]),
    ("def f():\n    from cardiacnets.models import create_model\n", ["cardiacnets.models"]),
    ("from cardiacnets import __version__, io\n", ["cardiacnets.__version__", "cardiacnets.io"]),
    ("import importlib\nimportlib.import_module(f'cardiacnets.commands.{name}')\n", ["cardiacnets.commands"]),
    ("from . import store\n", ["cardiacnets.data.store"]),
    ("import numpy\nfrom typing import Any\n", []),
])
def test_the_import_reader_sees_every_form(source, expected):
    probe = PACKAGE / "data" / "probe.py"  # read as if it stood in cardiacnets/data/
    assert [imp.target for imp in imports_of(probe, source)] == expected
    assert unit_of_module("cardiacnets.config") == "config.py" and unit_of_module("cardiacnets") == "__init__.py"
