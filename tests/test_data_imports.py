"""The data and metrics packages: no module imports another that imports it back (not even inside a function)."""

import ast
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]


def _import_graph(package_dir: Path) -> dict[str, set[str]]:
    """{module: modules of the same package it imports}, from every import statement, nested ones included."""
    modules, packages = {}, {}
    for path in package_dir.rglob("*.py"):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_init else parts) or "__init__"
        modules[name] = path
        # The package a relative import starts from: the module's own for an __init__, else its parent's.
        packages[name] = parts[:-1]
    graph = {}
    for name, path in modules.items():
        package_parts = packages[name]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            base = package_parts[: len(package_parts) - (node.level - 1)]
            prefix = ".".join([*base, node.module] if node.module else base)
            candidates = [f"{prefix}.{alias.name}" if prefix else alias.name for alias in node.names] + [prefix]
            targets |= {c for c in candidates if c in modules and c != name}
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


@pytest.mark.parametrize("package", ["data", "evaluate_metrics"])
def test_no_import_cycles(package):
    graph = _import_graph(REPO_ROOT / package)
    assert "cards" in graph or package != "data"
    assert _cycle(graph) is None, f"import cycle in {package}/: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_a_lazy_import_cycle(tmp_path):
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import y\n")
    assert _cycle(_import_graph(tmp_path)) == ["a", "b", "a"]


PROJECT_TOP_LEVEL = {"fuscore", "fuscore_data", "fuscore_metrics", "modeling_fuscore", "acceleration_fuscore",
                     "processing_fuscore", "image_utils_fuscore",
                     "pipeline_fuscore", "trainer_fuscore", "scoring_fuscore", "configuration_fuscore", "app", "handler"}
# What the package headers (data/__init__.py, evaluate_metrics/__init__.py) allow each folder to use from the project.
ALLOWED_PROJECT_IMPORTS = {
    "data": {"configuration_fuscore", "processing_fuscore", "fuscore.atomic"},
    "evaluate_metrics": {"fuscore.atomic"},
    "evaluate_metrics/plcc_srcc": set(),  # evaluate.load copies these files alone
    "evaluate_metrics/ivif_metrics": set(),
    "evaluate_metrics/map_metrics": set(),
}


def _project_imports(folder: Path) -> set[str]:
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found |= {name for name in names if name.split(".")[0] in PROJECT_TOP_LEVEL}
    return found


@pytest.mark.parametrize("folder", sorted(ALLOWED_PROJECT_IMPORTS))
def test_packages_import_only_what_their_header_allows(folder):
    assert _project_imports(REPO_ROOT / folder) <= ALLOWED_PROJECT_IMPORTS[folder]
