"""Tunables live in ``gonka_ray/constants.py``, and no constant name has two values.

Two AST scans over every ``gonka_ray`` module (STYLE §9; the rule is in the constants module's
docstring):

- no UPPER_CASE module-level name is assigned in two modules (a name, one value, one place);
- no module but ``constants.py`` assigns a tunable-looking number: a name that carries a unit
  or a bound (``*_S``, ``*_MS``, ``*_BYTES``, ``*_TOKENS``, ``*_BLOCKS``, ``*_TTL``, ``MAX_*``,
  ``MIN_*``, ``DEFAULT_*``) bound to a number or to arithmetic of numbers.

A self-test plants both violations in sources of its own, so the scans are shown able to fail.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gonka_ray"
CONSTANTS = "constants"

UPPER = re.compile(r"_?[A-Z][A-Z0-9_]*")
TUNABLE_NAME = re.compile(r"_?(?:MAX_|MIN_|DEFAULT_)\w+|\w+(?:_S|_MS|_BYTES|_TOKENS|_BLOCKS|_TTL)")
TYPE_VAR_FACTORIES = {"TypeVar", "ParamSpec", "TypeVarTuple", "NewType"}

# Tunable-looking numbers that are not tunables: fixed by an algorithm, not a setting.
ALLOWED_OUTSIDE: dict[tuple[str, str], str] = {
    ("crypto", "PUBLIC_KEY_BYTES"): "Ed25519 public key size, fixed by the algorithm",
    ("crypto", "SIGNATURE_BYTES"): "Ed25519 signature size, fixed by the algorithm",
    ("crypto", "SEED_BYTES"): "Ed25519 private seed size, fixed by the algorithm",
    ("crypto", "AEAD_TAG_BYTES"): "Poly1305 tag size, fixed by the algorithm",
    ("peer.handshake", "NONCE_BYTES"): "PeerHello's nonce size, fixed by the wire (Bytes32)",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def package_sources() -> dict[str, str]:
    return {module_name(p): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def module_assignments(source: str) -> Iterator[tuple[str, ast.expr, int]]:
    """``(name, value, line)`` of each UPPER_CASE name bound at module level (also inside a
    top-level ``if``/``try``), type variables excepted."""

    def walk(body: list[ast.stmt]) -> Iterator[tuple[str, ast.expr, int]]:
        for node in body:
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            elif isinstance(node, ast.If):
                yield from walk(node.body)
                yield from walk(node.orelse)
                continue
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody):
                    yield from walk(block)
                for handler in node.handlers:
                    yield from walk(handler.body)
                continue
            else:
                continue
            if _is_type_var(value):
                continue
            for target in targets:
                if isinstance(target, ast.Name) and UPPER.fullmatch(target.id):
                    yield target.id, value, node.lineno

    yield from walk(ast.parse(source).body)


def _is_type_var(value: ast.expr) -> bool:
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id in TYPE_VAR_FACTORIES
    )


def is_numeric(value: ast.expr) -> bool:
    """A number, or arithmetic of numbers only (``16 * 1024``, ``1 << 20``, ``-1``)."""
    if isinstance(value, ast.Constant):
        return type(value.value) in (int, float)
    if isinstance(value, ast.UnaryOp):
        return is_numeric(value.operand)
    if isinstance(value, ast.BinOp):
        return is_numeric(value.left) and is_numeric(value.right)
    return False


def duplicate_names(sources: Mapping[str, str]) -> dict[str, list[str]]:
    """UPPER_CASE module-level names assigned in more than one module -> ``module:line``s."""
    where: dict[str, dict[str, int]] = {}
    for module, source in sources.items():
        for name, _, line in module_assignments(source):
            where.setdefault(name, {}).setdefault(module, line)
    return {
        name: [f"{m}:{line}" for m, line in sorted(mods.items())]
        for name, mods in sorted(where.items())
        if len(mods) > 1
    }


def stray_tunables(sources: Mapping[str, str]) -> list[str]:
    """``module:line NAME`` of each tunable-looking number assigned outside constants.py."""
    found = []
    for module, source in sources.items():
        if module == CONSTANTS:
            continue
        for name, value, line in module_assignments(source):
            if (module, name) in ALLOWED_OUTSIDE:
                continue
            if TUNABLE_NAME.fullmatch(name) and is_numeric(value):
                found.append(f"gonka_ray/{module.replace('.', '/')}:{line} {name}")
    return found


def test_no_constant_name_is_defined_in_two_modules() -> None:
    assert duplicate_names(package_sources()) == {}, (
        "one name, one value: give each its own name or import the one definition"
    )


def test_tunables_live_in_constants() -> None:
    stray = stray_tunables(package_sources())
    assert stray == [], "move these to gonka_ray/constants.py:\n" + "\n".join(stray)


def test_the_allowlist_names_real_constants() -> None:
    """Each allowlisted name still exists (a stale entry would hide nothing, but mislead)."""
    sources = package_sources()
    for module, name in ALLOWED_OUTSIDE:
        assert name in {n for n, _, _ in module_assignments(sources[module])}, (module, name)


def test_the_scans_see_planted_violations() -> None:
    planted = {
        "constants": "RETRY_S = 1.0\n",
        "a": "RETRY_S = 2.0\nLIMIT = 'x'\nT = TypeVar('T')\n",
        "b": (
            "import typing\n"
            "LIMIT = 'y'\n"
            "T = TypeVar('T')\n"
            "if typing.TYPE_CHECKING:\n"
            "    MAX_ROWS = 16 * 1024\n"
            "_CACHE_BYTES: int = 1 << 20\n"
            "DEFAULT_NAME = 'fine: not a number'\n"
            "WINDOW_S = OTHER_S  # fine: an alias, not a literal\n"
            "SEED_BYTES = 32\n"
        ),
        "crypto": "SEED_BYTES = 32\n",
    }
    assert duplicate_names(planted) == {
        "LIMIT": ["a:2", "b:2"],
        "RETRY_S": ["a:1", "constants:1"],
        "SEED_BYTES": ["b:9", "crypto:1"],
    }
    assert stray_tunables(planted) == [
        "gonka_ray/a:1 RETRY_S",
        "gonka_ray/b:5 MAX_ROWS",
        "gonka_ray/b:6 _CACHE_BYTES",
        "gonka_ray/b:9 SEED_BYTES",  # allowlisted in crypto only
    ]
