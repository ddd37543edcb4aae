"""The ledger's peer-transport boundary: the in-process network, and no Ray below the ledger."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from pathlib import Path

import gonka_ray
from gonka_ray.ledger.transport import InProcessNetwork

LEDGER = Path(gonka_ray.__file__).parent / "ledger"
# What the ledger must not import: Ray, and the layers above it that carry Ray.
FORBIDDEN = ("ray", "gonka_ray.actors", "gonka_ray.peer", "gonka_ray.raykit", "gonka_ray.network")


class Replica:
    def __init__(self) -> None:
        self.heard: list[tuple[bytes, int]] = []

    async def deliver(self, data: bytes, sender: int) -> None:
        self.heard.append((data, sender))

    async def snapshot_offer(self):
        return None

    async def attest_state(self, height: int):
        return None


async def test_in_process_network_delivers_on_the_loop_and_honours_down() -> None:
    net = InProcessNetwork()
    reps = [Replica() for _ in range(3)]
    for i, r in enumerate(reps):
        net.add(i, r)
    links = [net.transport(i) for i in range(3)]
    links[0].send(1, b"m")
    net.down.add(2)
    links[0].send(2, b"lost")
    links[2].send(1, b"lost too")
    await asyncio.sleep(0)
    assert reps[1].heard == [(b"m", 0)] and reps[2].heard == []
    assert links[0].sync_peers() == [reps[1]]  # not itself, not a replica that is down
    assert links[2].sync_peers() == []


def imported_modules(path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports (function-level imports included)."""
    package = "gonka_ray.ledger"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def test_no_ledger_module_imports_ray_or_the_layers_above() -> None:
    found = {
        f"{p.name}: {m}"
        for p in sorted(LEDGER.rglob("*.py"))
        for m in imported_modules(p)
        if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)
    }
    assert len(list(LEDGER.rglob("*.py"))) > 10 and not found, sorted(found)


def test_importing_the_whole_ledger_loads_no_ray() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import gonka_ray.ledger as L\n"
        "for m in pkgutil.iter_modules(L.__path__):\n"
        "    importlib.import_module('gonka_ray.ledger.' + m.name)\n"
        "bad = [k for k in sys.modules if k == 'ray' or k.startswith(('ray.', 'gonka_ray.peer'))]\n"
        "print(sorted(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=LEDGER.parent.parent,
        timeout=120,
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
