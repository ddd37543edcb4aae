"""Ray metrics recorded by the ingress, transport agents, verifiers and ledger replicas reach
Ray's Prometheus export (``/metrics`` on the node's metrics export port)."""

from __future__ import annotations

import re
import time

import httpx
import openai

EXPORT_WAIT_S = 45  # Ray reports metrics every ~10 s


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list] = {}
    for line in text.splitlines():
        m = re.match(r"^(ray_gonka_\w+?)(?:\{(.*)\})? ([0-9.eE+-]+|NaN)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def _total(samples, name: str, **labels: str) -> float:
    rows = [v for n, rs in samples.items() if n.startswith(name) for lab, v in rs
            if all(lab.get(k) == v2 for k, v2 in labels.items())]  # fmt: skip
    return sum(rows) if rows else -1.0


def test_metrics_reach_rays_prometheus_export(served) -> None:
    import ray

    client = openai.OpenAI(base_url=served["url"] + "v1", api_key=served["api_key"], max_retries=0)
    msgs = [{"role": "user", "content": "metrics"}]
    client.chat.completions.create(model="fake", messages=msgs, max_tokens=3)
    list(client.chat.completions.create(model="fake", messages=msgs, max_tokens=3, stream=True))
    port = ray._private.worker.global_worker.node.metrics_export_port
    required = {
        "ray_gonka_requests": {"endpoint": "chat", "code": "200"},
        "ray_gonka_request_latency_s_count": {"endpoint": "chat", "stream": "True"},
        "ray_gonka_tokens": {"kind": "completion"},
        "ray_gonka_ta_requests": {"outcome": "ok"},
        "ray_gonka_ledger_height": {"participant": "p0"},
        "ray_gonka_ledger_txs": {"participant": "p1"},
        "ray_gonka_ledger_commit_latency_s_count": {},
    }
    deadline = time.monotonic() + EXPORT_WAIT_S
    while True:
        samples = _samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        missing = [n for n, lab in required.items() if _total(samples, n, **lab) <= 0]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, f"not exported: {missing}; have {sorted(samples)}"
    assert _total(samples, "ray_gonka_requests", endpoint="chat", code="200") >= 2
    assert _total(samples, "ray_gonka_ledger_height", participant="p0") > 0
