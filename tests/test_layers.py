"""The package's layers (issue 21): a lower layer never imports a higher one, lazy imports included.
Every import statement of every module is read (module level and inside functions) and resolved to
the module it names."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rewindkit"
# lowest first; a module may import its own layer and those listed before it
LAYERS = ["platform", "core", "data", "models", "engine", "paper", "notebook", "top"]
ALLOWED = {
    "platform": {"platform"},
    "core": {"platform", "core"},
    "data": {"platform", "core", "data"},
    "models": {"platform", "core", "data", "models"},  # a network is built for its data (vocabularies)
    "engine": {"platform", "core", "data", "models", "engine"},
    "paper": {"platform", "core", "paper"},  # the released runs and figures need no engine
    "notebook": {"platform", "core", "data", "models", "engine", "paper", "notebook"},
    "top": set(LAYERS),
}


def layer_of(module: str) -> str:
    """``rewindkit.core.masks`` → ``core``; the package's own top-level modules → ``top``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "top"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path`` that names a rewindkit module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "rewindkit"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "rewindkit":
                continue
            if node.module is None or target == "rewindkit":  # from . import a, b: each is a module
                found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_layer():
    assert {layer_of(module_name(p)) for p in MODULES} == set(LAYERS)
    top = sorted(module_name(p) for p in MODULES if layer_of(module_name(p)) == "top")
    assert top == ["rewindkit", "rewindkit.cli", "rewindkit.experiments", "rewindkit.plots", "rewindkit.plugins"]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_a_layer_above_its_own(path):
    own = layer_of(module_name(path))
    wrong = [f"line {line}: {target} ({layer_of(target)})" for line, target in imports(path)
             if layer_of(target) not in ALLOWED[own]]
    assert not wrong, f"{module_name(path)} ({own}) imports above its layer: {wrong}"


def test_the_walker_sees_lazy_imports():
    """The check would fail if a function inside core imported the engine (read, not executed)."""
    source = "def f():\n    from ..engine import runner\n"
    tree_imports = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)]
    assert tree_imports and tree_imports[0].level == 2 and tree_imports[0].module == "engine"
    profiles = PACKAGE / "engine" / "profiles.py"
    assert "rewindkit.data" in {t for _, t in imports(profiles)}  # Profile.validate's import, inside a method


def test_no_import_cycles():
    """Module-level and lazy imports together form no cycle (a lazy import that closes one is a
    layering smell: the lower module should not need the higher)."""
    names = {module_name(p) for p in MODULES}
    graph = {module_name(p): {t for _, t in imports(p) if t in names and t != module_name(p)} for p in MODULES}
    graph["rewindkit"] = set()  # the package's face imports everything by design; nothing imports it back
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()
    for node in sorted(graph):
        visit(node)
    assert not cycles, cycles


def test_the_face_of_the_package():
    """What notebooks and users import keeps working wherever the modules live."""
    import importlib

    import rewindkit
    for name in ("experiments", "plots", "reference", "workspace", "pruning", "models", "techniques", "training",
                 "data", "plugins", "recipe", "profiles"):
        module = importlib.import_module(f"rewindkit.{name}")
        assert getattr(rewindkit, name) is module
    from rewindkit.profiles import get_profile  # noqa: F401
    from rewindkit.recipe import Recipe  # noqa: F401
