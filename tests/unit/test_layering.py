"""The package keeps the layer order the README's layout section describes.

Every import between ``gonka_ray`` modules, lazy (function-level) ones included, goes from a layer
to the same or a lower one; no import cycle; every module is placed in a layer (a new module must
be placed here, deliberately); no file over 1,000 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gonka_ray"
MAX_LINES = 1_000

# Lowest first. A module belongs to the layer of the longest prefix that names it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("exceptions", "constants")),
    ("primitives", ("crypto", "hashing", "config", "metrics", "wire", "raykit")),
    # pure protocol and verification math: no Ray, no torch, no clock (the verification harness
    # and calibration runner, which drive engines, are roles below)
    ("rules", ("protocol", "verification")),
    ("state and engines", ("ledger", "engine")),
    (
        "roles",  # a participant's actors and what wires them to peers
        ("actors", "peer", "client_request", "verification.harness", "verification.calibrate"),
    ),
    ("adversary", ("adversary",)),  # cheating subclasses of the roles (tests, demos)
    ("participant", ("actors.participant",)),  # the Ray actor shells that pick honest or not
    ("front doors", ("network", "serve", "sdk")),
    ("entry points", ("demo", "cli", "bench", "federation", "")),  # "": the package root
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for level, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".") or prefix == ""
            if matches and len(prefix) > best_len:
                best, best_len = level, len(prefix)
    assert best is not None, f"gonka_ray.{module} is in no layer: place it in LAYERS"
    return best


def imports(name: str, source: str, known: set[str], *, package_init: bool = False) -> set[str]:
    """The gonka_ray modules (names relative to the package) that module ``name`` imports
    anywhere in ``source``, function bodies included."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = node.module or ""
            if node.level:
                package = name.split(".") if package_init else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(["gonka_ray", *package, *([base] if base else [])])
            # `from gonka_ray.x import y` imports module x.y when there is one, else x
            targets = [
                f"{base}.{a.name}" if _relative(f"{base}.{a.name}") in known else base
                for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target != "gonka_ray" and not target.startswith("gonka_ray."):
                continue
            rel = _relative(target)
            while rel and rel not in known:
                rel = rel.rpartition(".")[0]
            if rel != name:
                found.add(rel)
    return found


def _relative(target: str) -> str:
    return target.removeprefix("gonka_ray").removeprefix(".")


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {
        name: imports(name, p.read_text(), known, package_init=p.name == "__init__.py")
        for name, p in mods.items()
    }


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_no_module_imports_from_a_layer_above_it() -> None:
    upward = [
        f"gonka_ray.{m} ({LAYERS[layer_of(m)][0]}) imports gonka_ray.{t} ({LAYERS[layer_of(t)][0]})"
        for m, targets in graph().items()
        for t in sorted(targets)
        if layer_of(t) > layer_of(m)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles() -> None:
    g = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(g):
        if start not in state:
            visit(start, [start])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_no_file_over_the_line_limit() -> None:
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


def test_the_checks_see_a_violation() -> None:
    """A lazy upward import is found and placed above its importer (so the checks can fail)."""
    found = imports("crypto", "def f():\n    from gonka_ray.serve import views\n", set(modules()))
    assert found == {"serve.views"}
    assert layer_of("serve.views") > layer_of("crypto")
    relative = imports("ledger.state", "from ..actors import executor\n", set(modules()))
    assert relative == {"actors.executor"}
