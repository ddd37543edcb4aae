"""``gonka-ray up`` stops like Ctrl-C on SIGTERM (what systemd, Docker and Kubernetes send) and on
SIGINT: drain, flush every ledger replica, kill the actors, exit 0, no stack trace.

Each run starts its own loopback Ray in a child process (separate from the shared test session).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.served_network import free_port

READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 120.0


def _config(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "network.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "participants": [{"name": f"p{i}", "weight": 100} for i in range(4)],
                "model": {"name": "fake"},
                "engine": {"kind": "fake"},
                "ledger": {"storage_dir": str(tmp_path / "ledger")},
                "epoch": {"epoch_blocks": 1_000_000},
            }
        )
    )
    return path


def _until_ready(proc: subprocess.Popen) -> list[str]:
    """The CLI's output up to its "to stop" line (or its end, or the ready timeout)."""
    lines: list[str] = []
    deadline = time.monotonic() + READY_TIMEOUT_S
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "to stop" in line:
            break
    return lines


def _cli(*args: str) -> subprocess.Popen:
    cli = Path(sys.executable).parent / "gonka-ray"
    return subprocess.Popen(
        [str(cli), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # the signal goes to the CLI alone, as `kill PID` sends it
    )


# NOTE: SIGTERM here, SIGINT (Ctrl-C) on the federated run below: each start costs ~1 min.
def test_up_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    signum = signal.SIGTERM
    config = str(_config(tmp_path, "sigterm"))
    proc = _cli("up", config, "--port", str(free_port()), "--num-cpus", "4")
    try:
        lines = _until_ready(proc)
        assert any("to stop" in ln for ln in lines), "".join(lines)
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = "".join(lines) + out
    assert proc.returncode == 0, text
    for marker in ("Traceback", "Fatal Python error", "Current thread", "Stack (most recent"):
        assert marker not in text, text
    assert f"stopping ({signal.Signals(signum).name})" in text, text
    assert "stopped: 8 roles drained, 4 ledgers flushed" in text, text
    # every replica's store was closed cleanly: its write-ahead log was checkpointed and removed,
    # and the database holds the committed blocks
    stores = sorted((tmp_path / "ledger").rglob("replica-*.sqlite"))
    assert len(stores) == 4, stores
    for store in stores:
        assert not Path(f"{store}-wal").exists() or Path(f"{store}-wal").stat().st_size == 0
        with sqlite3.connect(store) as db:
            (blocks,) = db.execute("SELECT COUNT(*) FROM blocks").fetchone()
        assert blocks >= 1, store


def test_up_federated_runs_a_cluster_per_participant_and_stops_cleanly(tmp_path: Path) -> None:
    config = yaml.safe_load(_config(tmp_path, "fedup").read_text())
    config["participants"] = config["participants"][:2]
    path = tmp_path / "network.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    proc = _cli("up", str(path), "--federated", "--port", str(port))
    try:
        out = "".join(_until_ready(proc))
        assert f"p0: serving http://127.0.0.1:{port}/v1" in out, out
        assert f"p1: serving http://127.0.0.1:{port + 1}/v1" in out, out
        nodes = [tmp_path / "ledger" / n / "ready.json" for n in ("p0", "p1")]
        gcs = {yaml.safe_load(p.read_text())["gcs_address"] for p in nodes}
        assert len(gcs) == 2  # two Ray clusters
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out + rest
    assert "stopping (SIGINT)" in out + rest, out + rest
    assert "stopped: 2 of 2 cleanly" in rest, rest
    assert "Traceback" not in rest, rest
