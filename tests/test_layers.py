"""The package's layers only point down, and no module imports itself back through others.

Every ``import`` of an icrl module counts, at module level or inside a function: an import moved
into a function to dodge a cycle is still a cycle here.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "icrl"
# lowest first; a module may import its own layer and the layers below it
LAYERS = (
    ("science", ("icrl", "icrl.recall", "icrl.regression", "icrl.optim", "icrl.streams", "icrl.module")),
    ("machinery", ("icrl.checkpoints", "icrl.callbacks", "icrl.scalars", "icrl.ensemble")),
    ("cli", ("icrl.arguments", "icrl.cli")),
    ("sweep", ("icrl.sweep",)),
    ("reproduce", ("icrl.reproduce",)),
    ("entry", ("icrl.__main__",)),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    """The index of the layer holding ``module``: the longest matching prefix decides."""
    matches = [(len(prefix), i) for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return max(matches)[1]


def imports(module: str, source: str | None = None) -> set[str]:
    """The icrl modules ``module`` imports anywhere in its source (``from a import b``: ``a.b`` if it is a module)."""
    path = MODULES.get(module)
    tree = ast.parse(source if source is not None else path.read_text())
    package = module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # `import icrl.recall.data` names a module; trim attributes
                name = name.rpartition(".")[0]
            if name.startswith("icrl") and name != module:
                found.add(name)
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_layers_only_point_down():
    upward = [f"{m} ({LAYERS[layer(m)][0]}) imports {t} ({LAYERS[layer(t)][0]})"
              for m, targets in GRAPH.items() for t in sorted(targets) if layer(t) > layer(m)]
    assert not upward, "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []  # state: 1 on the current path, 2 done

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    return next((c for m in sorted(graph) if m not in state and (c := visit(m))), None)


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
])
def test_find_cycle_finds_a_cycle(graph, expected):
    assert find_cycle(graph) == expected


def test_imports_inside_functions_and_relative_ones_count():
    source = "import torch\nfrom .task import RecallTask\ndef f():\n    from icrl.sweep import main\n    import icrl.cli\n"
    assert imports("icrl.recall.model", source) == {"icrl.recall.task", "icrl.sweep", "icrl.cli"}
