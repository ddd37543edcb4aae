"""``gonka_ray.connect()`` from a plain Python process attached to the served network's Ray.

The child process joins the test session's Ray by address, as a notebook user would, and uses
both the blocking methods and (inside ``asyncio.run``, i.e. with a running loop) the async ones
and the blocking ones again; it prints one JSON document that the test checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.served_network import API_KEY, NAMESPACE, NETWORK

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    import gonka_ray

    address, namespace, url, api_key = sys.argv[1:5]
    c = gonka_ray.connect(address=address, namespace=namespace)  # the only network there
    out = {"network": c.network, "model": c.model, "participants": c.participant_names}
    before = c.balance_sync()
    res = c.chat_sync([{"role": "user", "content": "hi from a script"}], max_tokens=4, seed=3)
    out["chat"] = {"text": res.text, "id": res.inference_id, "cost": res.done.cost}
    out["record"] = c.wait_inference_sync(res.inference_id, until=("finished", "validated"))
    out["balance_drop"] = before - c.balance_sync()
    items = list(c.stream_sync([{"role": "user", "content": "stream"}], max_tokens=3, ta="p2"))
    out["stream"] = {"chunks": len(items) - 1, "last": type(items[-1]).__name__,
                     "id": items[-1].inference_id.hex()}

    async def notebook():
        again = await c.chat([{"role": "user", "content": "hi from a script"}], max_tokens=4,
                             seed=3)
        parts = await c.participants()
        recs = await c.records(limit=5)
        # a blocking call from inside a running loop must not deadlock or raise
        height = c.height_sync()
        return {"same_text": again.text == res.text, "participants": parts,
                "records": [r["id"] for r in recs], "height": height}

    out["async"] = asyncio.run(notebook())
    oa = c.openai(api_key, base_url=url + "v1", max_retries=0)
    r = oa.chat.completions.create(model=c.model, messages=[{"role": "user", "content": "x"}],
                                   max_tokens=2)
    out["openai"] = {"id": r.model_extra["inference_id"], "tokens": r.usage.completion_tokens}
    out["repr"] = repr(c)
    print("RESULT " + json.dumps(out))
    """
)


def test_connect_from_a_plain_python_process(served) -> None:
    import ray

    address = ray.get_runtime_context().gcs_address
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, address, NAMESPACE, served["url"], API_KEY],
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    assert out["network"] == NETWORK and out["model"] == "fake"
    assert out["participants"] == ["p0", "p1", "p2"]
    chat = out["chat"]
    assert chat["text"] and len(chat["id"]) == 64 and chat["cost"] > 0
    assert out["record"]["id"] == chat["id"] and out["record"]["cost"] == chat["cost"]
    assert out["balance_drop"] >= chat["cost"]  # paid by the demo client account it signed as
    assert out["stream"]["chunks"] >= 1 and out["stream"]["last"] == "InferenceDone"
    nb = out["async"]
    assert nb["same_text"]  # same seed, same answer
    assert [p["name"] for p in nb["participants"]] == ["p0", "p1", "p2"]
    assert chat["id"] in nb["records"] and nb["height"] > 0
    assert len(out["openai"]["id"]) == 64 and out["openai"]["tokens"] >= 1
