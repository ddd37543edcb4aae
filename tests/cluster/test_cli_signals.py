"""``gonka-ray up`` stops like Ctrl-C on SIGTERM (what systemd, Docker and Kubernetes send) and on
SIGINT: drain, flush every ledger replica, kill the actors, exit 0, no stack trace. ``up
--federated`` runs a local federation (a Ray cluster per participant), checked end to end here.

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

import httpx
import yaml

from gonka_ray import crypto
from gonka_ray.config import load_config
from gonka_ray.network import participant_key
from tests.served_network import free_port

READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 120.0
API_KEY = "sk-federation-test"
PROBE = """
import sys, ray, gonka_ray
ray.init(address=sys.argv[1], namespace=sys.argv[2], log_to_driver=False)
for name in sys.argv[3:]:
    try:
        ray.get_actor(name)
        print(name, "found")
    except ValueError:
        print(name, "missing")
client = gonka_ray.connect(namespace=sys.argv[2])  # the SDK attaches to its own participant
done = client.chat_sync([{"role": "user", "content": "sdk"}], max_tokens=2).done
print("sdk", ",".join(client.participant_names), done.completion_tokens)
"""


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
    # NOTE: also the local federation's end-to-end checks (one start costs ~1 min): four
    # participants, each its own Ray cluster in its own `gonka-ray node` process with a key of
    # its own, share only the network config (public keys, peer addresses); a request sent to
    # one front door is executed by another participant over the peer transport and its record
    # reaches every participant's ledger; from one participant's Ray cluster the others' actors
    # cannot be looked up; the SDK attaches to its own participant and is served there.
    path = _config(tmp_path, "fedup")
    port = free_port(4)  # one HTTP port per participant: port .. port + 3
    proc = _cli("up", str(path), "--federated", "--port", str(port), "--api-key", API_KEY)
    try:
        out = "".join(_until_ready(proc))
        urls = {f"p{i}": f"http://127.0.0.1:{port + i}/" for i in range(4)}
        for name, url in urls.items():
            assert f"{name}: serving {url}v1" in out, out
        root = tmp_path / "ledger"
        nodes = {n: yaml.safe_load((root / n / "ready.json").read_text()) for n in urls}
        assert len({n["gcs_address"] for n in nodes.values()}) == 4  # four Ray clusters
        assert len({n["pid"] for n in nodes.values()}) == 4
        # each runs with a key of its own: the shared config names only their public keys,
        # not the ones the config's seed would derive, and no secret key is in it
        config = load_config(path)
        shared = yaml.safe_load((root / "network.yaml").read_text())["participants"]
        derived = {
            p.name: participant_key(config, p.name).public_key.hex() for p in config.participants
        }
        assert all(p["public_key"] != derived[p["name"]] for p in shared), shared
        for name in urls:
            key = crypto.KeyPair.load(root / name / "participant.key")
            assert (
                next(p for p in shared if p["name"] == name)["public_key"] == key.public_key.hex()
            )

        ids = [_chat(urls["p0"], f"q{i}")["inference_id"] for i in range(4)]
        for name in ("p1", "p2", "p3"):  # every participant's ledger has every record
            deadline = time.monotonic() + 60
            recs = [_record(urls[name], i) for i in ids]
            while not all(r and r["status"] != "started" for r in recs):
                assert time.monotonic() < deadline, (name, recs)
                time.sleep(0.5)
                recs = [_record(urls[name], i) for i in ids]
            executors = {r["executor_name"] for r in recs}
            assert executors <= {"p1", "p2", "p3"}, executors  # never p0's own executor

        # from p0's Ray cluster, p0's actors are there and nobody else's are
        own = [f"fedup.p0.{role}" for role in ("executor", "ledger")]
        others = [f"fedup.p{i}.{role}" for i in (1, 2, 3) for role in ("executor", "ledger")]
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, nodes["p0"]["gcs_address"], "gonka_ray", *own, *others],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        )
        seen = dict(line.split()[:2] for line in probe.stdout.splitlines() if " " in line)
        assert {n: seen.get(n) for n in own} == dict.fromkeys(own, "found"), probe.stderr[-2000:]
        assert {n: seen.get(n) for n in others} == dict.fromkeys(others, "missing")
        assert seen.get("sdk") == "p0", probe.stdout  # only its own participant, and it serves
        assert "sdk p0 2" in probe.stdout.splitlines(), probe.stdout

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out + rest
    assert "stopping (SIGINT)" in out + rest, out + rest
    assert "stopped: 4 of 4 cleanly" in rest, rest  # each node exited 0 on its SIGTERM
    assert "Traceback" not in rest, rest


def _chat(url: str, content: str) -> dict:
    r = httpx.post(
        url + "v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": content}], "max_tokens": 3},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return r.json()


def _record(url: str, inference_id: str) -> dict | None:
    r = httpx.get(
        url + f"v1/inferences/{inference_id}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    return r.json() if r.status_code == 200 else None
