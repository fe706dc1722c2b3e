"""The import graph of src/iha has no circle and follows the layers of docs/architecture.md.

Every module is parsed (``ast``, nothing is imported), every ``import`` and ``from ... import``
of an ``iha`` module counts, also the ones inside functions. Layers, lowest first; a module may
import its own layer and the layers below, never a higher one:

    core -> backends -> module -> models -> applications -> cli
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# (layer, module prefixes); "iha" alone is the package's __init__ (the public API).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("iha.masks", "iha.rope", "iha.cache", "iha.flops", "iha.optim", "iha.tokenizers",
              "iha.validate")),  # fmt: skip
    ("backends", ("iha.backends",)),
    ("module", ("iha.functional", "iha.attention", "iha.simplicial", "iha")),
    ("models", ("iha.models",)),
    ("applications", ("iha.tasks", "iha.theory", "iha.train", "iha.hf", "iha.eval",
                      "iha.reproduce")),  # fmt: skip
    ("cli", ("iha.cli", "iha.__main__", "iha.long_context")),
]
# Packages reached only through their top level from outside (their modules are internals).
SEALED = ("iha.backends",)


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest prefix naming ``module`` (ValueError if none)."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "iha" and module.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise ValueError(f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md")
    return best


def modules(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package __init__) for every module under src/iha."""
    found = {}
    for path in sorted((src / "iha").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def import_edges(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the iha modules it imports (``from pkg import name`` counts as pkg.name when
    that is a module, else as pkg)."""
    known = modules(src)
    edges: dict[str, set[str]] = {}
    for name, (path, is_package) in known.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[: len(package) - node.level + 1]
                    base = ".".join(package + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in known else base)
        edges[name] = {t for t in targets if t in known and t != name}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """Imports from a lower layer to a higher one, as readable lines."""
    return [
        f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
        for a in sorted(edges)
        for b in sorted(edges[a])
        if layer_of(b) > layer_of(a)
    ]


def unsealed_imports(edges: dict[str, set[str]]) -> list[str]:
    """Imports of private modules (``_name``) or of a sealed package's modules from outside."""
    bad = []
    for a in sorted(edges):
        for b in sorted(edges[a]):
            owner = b.rsplit(".", 1)[0]
            inside = a == owner or a.startswith(owner + ".")  # the package itself or below
            private = b.rsplit(".", 1)[-1].startswith("_") and not inside
            sealed = any(b.startswith(s + ".") and not a.startswith(s) for s in SEALED)
            if private or sealed:
                bad.append(f"{a} imports {b}")
    return bad


def package_edges(edges: dict[str, set[str]], packages: tuple[str, ...]) -> dict[str, set[str]]:
    """The module graph contracted to ``packages`` (imports between different packages)."""

    def owner(module: str) -> str | None:
        return next((p for p in packages if module == p or module.startswith(p + ".")), None)

    contracted: dict[str, set[str]] = {p: set() for p in packages}
    for a, targets in edges.items():
        for b in targets:
            pa, pb = owner(a), owner(b)
            if pa and pb and pa != pb:
                contracted[pa].add(pb)
    return contracted


def test_every_module_is_in_a_layer():
    for name in modules():
        layer_of(name)


def test_import_graph_has_no_cycle():
    assert find_cycle(import_edges()) is None, f"import cycle: {find_cycle(import_edges())}"


def test_no_import_from_a_lower_layer_to_a_higher_one():
    assert upward_imports(import_edges()) == []


def test_private_modules_and_backend_internals_stay_inside_their_package():
    assert unsealed_imports(import_edges()) == []


def test_application_packages_import_each_other_without_a_cycle():
    applications = dict(LAYERS)["applications"]
    contracted = package_edges(import_edges(), applications)
    assert find_cycle(contracted) is None, f"package cycle: {find_cycle(contracted)}"


def test_the_library_imports_no_command_line_module():
    edges = import_edges()
    cli = {m for m in edges if layer_of(m) == len(LAYERS) - 1}
    assert not any(edges[m] & cli for m in edges if m not in cli)


@pytest.mark.parametrize(
    "edges,problem",
    [
        ({"iha.masks": {"iha.rope"}, "iha.rope": {"iha.masks"}}, "cycle"),
        ({"iha.rope": {"iha.functional"}, "iha.functional": set()}, "upward"),
        ({"iha.models.layers": {"iha.backends.sdpa"}, "iha.backends.sdpa": set()}, "sealed"),
        ({"iha.hf.x": {"iha.eval._text"}, "iha.eval._text": set()}, "sealed"),
    ],
)
def test_the_checks_catch_what_they_are_for(edges, problem):
    # The checks above pass on the real tree; here each one must flag a small broken graph.
    assert (find_cycle(edges) is not None) == (problem == "cycle")
    assert bool(upward_imports(edges)) == (problem == "upward")
    assert bool(unsealed_imports(edges)) == (problem == "sealed")


def test_the_parser_resolves_relative_and_function_level_imports(tmp_path):
    pkg = tmp_path / "iha" / "models"
    pkg.mkdir(parents=True)
    (tmp_path / "iha" / "__init__.py").write_text("")
    (tmp_path / "iha" / "rope.py").write_text("")
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("def f():\n    from iha import rope\n    from . import b\n")
    (pkg / "b.py").write_text("import iha.models.a\n")
    edges = import_edges(tmp_path)
    assert edges["iha.models"] == {"iha.models.a"}
    assert edges["iha.models.a"] == {"iha.rope", "iha.models.b"}
    assert find_cycle(edges) in (
        ["iha.models.a", "iha.models.b", "iha.models.a"],
        ["iha.models.b", "iha.models.a", "iha.models.b"],
    )
