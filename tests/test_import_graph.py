"""The library's modules import each other without a cycle: leaf modules never reach up to the CLI, the module or the callbacks.

The graph is read from the sources (``ast``), function-level imports included, because an import
inside a function still ties the two files together: a cycle there is one refactor away from an
import-time failure and makes the layers impossible to test alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import import_graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_sees_a_planted_cycle_through_a_function_level_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "leaf.py").write_text("import math\n")
    (package / "a.py").write_text("from pkg.sub import b\nfrom pkg import leaf\n")
    (package / "sub" / "b.py").write_text("def late():\n    from .. import a\n")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg", "pkg.sub", "pkg.sub.b", "pkg.leaf"} and graph["pkg.sub.b"] == {"pkg", "pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    (package / "sub" / "b.py").write_text("import math\n")
    assert find_cycle(import_graph(package)) is None


# The package's layers, lowest first: a module may import its own layer and those below, never one above.
# Every module must match a pattern (the first that matches places it), so a new module is placed on purpose.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "utilities",
        ("utils", "utils.*", "scores"),
    ),
    (
        "data sources, networks, augmentation",
        (
            "data.sources",
            "data.idx",
            "data.image_folder",
            "data.torchvision_sources",
            "data.real",
            "data.ticker",
            "nets",
            "nets.*",
            "augment",
        ),
    ),
    (
        "the set format, classifiers, data modules",
        ("set_format", "classify", "data.datamodule", "data.synthetic_datamodule", "data"),
    ),
    ("distillation parts, evaluation, exports", ("evaluation", "soft_labels", "teacher", "export", "distill.*")),
    ("Lightning glue", ("distill.module", "distill.strategy", "distill", "callbacks", "callbacks.*", "preflight")),
    ("commands and the command line", ("commands", "cli", "")),
]


def layer_of(module: str, layers=LAYERS) -> int:
    """The index of the layer ``module`` (a dotted name below the package, ``""`` for the package) belongs to."""
    import fnmatch

    # A module named exactly in a layer beats a wildcard of a lower one (distill.module is glue, other distill.* are parts).
    exact = [i for i, (_, patterns) in enumerate(layers) if module in patterns]
    if exact:
        return exact[0]
    wild = [i for i, (_, patterns) in enumerate(layers) if any(fnmatch.fnmatchcase(module, p) for p in patterns)]
    if not wild:
        raise AssertionError(f"module {module!r} is in no layer of tests/test_import_graph.py LAYERS: place it")
    return wild[0]


def upward_imports(graph: dict[str, set[str]], package: str, layers=LAYERS) -> list[str]:
    """``a -> b`` for every import of a module of a higher layer."""
    short = lambda name: name[len(package) + 1 :] if name != package else ""  # noqa: E731
    found = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_of(short(target), layers) > layer_of(short(source), layers):
                found.append(
                    f"{short(source) or package} ({layers[layer_of(short(source), layers)][0]}) -> {short(target) or package} ({layers[layer_of(short(target), layers)][0]})"
                )
    return found


def test_no_module_imports_a_higher_layer():
    assert upward_imports(import_graph(), "lightning_dd") == []


def test_the_layer_check_sees_a_planted_upward_import(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def late():\n    from pkg import high\n")  # a function-level import reaches up
    (package / "high.py").write_text("from pkg import low\n")
    layers = [("low", ("low",)), ("high", ("high", ""))]
    assert upward_imports(import_graph(package), "pkg", layers) == [
        "low (low) -> pkg (high)",
        "low (low) -> high (high)",
    ]
    assert upward_imports({"pkg.high": {"pkg.low"}, "pkg.low": set()}, "pkg", layers) == []


def test_no_test_file_imports_another():
    """Shared test code lives in helpers.py (and fixtures in conftest.py), so test files stay independent."""
    tests = Path(__file__).resolve().parent
    found = []
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [f"{path.name} imports {n}" for n in names if n.startswith("test_")]
    assert found == []


def long_functions(root: Path, limit: int = 60) -> list[str]:
    """``file:function (lines)`` for every function whose body, docstring aside, is over ``limit`` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0
            if lines > limit:
                found.append(f"{path.relative_to(root.parent)}:{node.name} ({lines})")
    return found


def test_no_function_body_is_over_60_lines(tmp_path):
    """Short functions, measured after the formatter (a line budget is not met by joining lines)."""
    assert long_functions(Path(__file__).resolve().parents[1] / "lightning_dd") == []
    package = tmp_path / "pkg"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (package / "big.py").write_text(f'def big():\n    """Doc."""\n{body}\n\n\ndef small():\n    return 1\n')
    assert long_functions(package) == ["pkg/big.py:big (61)"]
