"""Shared helpers for benchmark scripts: machine facts, git commit, results JSON, tables."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """CPUs, memory, GPU (if any) and software versions of this run."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["gpu"] = None
    return info


def git_commit(dirty: list[str] | None = None) -> str:
    """HEAD's hash, with ``-dirty`` when tracked files differ from it (``dirty``: what
    :func:`git_dirty` already returned, so one result's commit and file list agree)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = git_dirty() if dirty is None else dirty
    return out.stdout.strip() + ("-dirty" if dirty else "")


def git_dirty() -> list[str]:
    """The tracked files that differ from HEAD (``git status --porcelain`` lines): a result
    made with any of them is not the committed code's, and says so. Other results files
    (``benchmarks/results/``) are output, not code, and do not count."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return [line for line in lines if not line.split()[-1].startswith("benchmarks/results/")]


def write_results(name: str, summary: dict[str, Any], **detail: Any) -> Path:
    """Write ``benchmarks/results/<name>.json`` with ``summary``, machine and commit; a result
    made from a tree with uncommitted changes names the files that differed."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    dirty = git_dirty()
    if dirty:
        print(f"WARNING: {path.name} comes from a tree that differs from its commit: {dirty}")
    doc = {
        "summary": summary,
        "machine": machine(),
        "git_commit": git_commit(dirty),
        "git_dirty_files": dirty,  # empty: the figures are the commit's
        "created_unix_s": int(time.time()),
        **detail,
    }
    path.write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    return path


def print_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Print rows as an aligned text table."""
    if not rows:
        return
    columns = columns or list(rows[0])
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


async def stream_chat(http: Any, url: str, body: dict[str, Any]) -> tuple[int, float | None]:
    """POST one streamed chat request (``body`` with ``"stream": True``) to ``url`` with the
    ``httpx.AsyncClient`` ``http``: (completion tokens from the usage chunk, seconds to the
    first chunk after gonka's role head, None if none came).

    Raises:
        RuntimeError: an HTTP status other than 200, or an error chunk in the stream.
    """
    t0 = time.perf_counter()
    tokens, first = 0, None
    async with http.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            doc = json.loads(line[6:])
            if "error" in doc:
                raise RuntimeError(f"stream error: {doc['error']}")
            choices = doc.get("choices") or [{}]
            delta = choices[0].get("delta", {})
            role_head = delta == {"role": "assistant", "content": ""} and not doc.get("usage")
            if first is None and not role_head:  # gonka's chat stream opens with a role head
                first = time.perf_counter() - t0
            if doc.get("usage"):
                tokens = int(doc["usage"]["completion_tokens"])
    return tokens, first
