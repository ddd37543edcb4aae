"""The OpenAI-compatible front door through the official ``openai`` client.

The served network (fake engine, three participants) is the e2e tier's shared one
(``served`` in ``tests/e2e/conftest.py``).
"""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import openai
import pytest

from gonka_ray import sdk
from gonka_ray.exceptions import GonkaError, InsufficientBalance, Overloaded
from gonka_ray.serve.deployment import serve_network
from gonka_ray.serve.errors import error_response, unwrap_error
from tests.served_network import API_KEY, POOR_KEY
from tests.served_network import free_port as _free_port


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served["url"] + "v1", api_key=API_KEY, max_retries=0)


def _post(served, path: str, body, headers=None) -> httpx.Response:
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    hdrs = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    hdrs.update(headers or {})
    return httpx.post(served["url"] + path, content=content, headers=hdrs, timeout=60)


def _error(resp: httpx.Response) -> dict:
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "code", "param"}, err
    return err


# --- the happy paths ---------------------------------------------------------------------------


def test_chat_completion_has_usage_inference_id_and_is_on_the_ledger(client, served) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="fake",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=6,
        seed=7,
        temperature=0.8,
        top_p=0.9,
    )
    resp = raw.parse()
    iid = resp.model_extra["inference_id"]
    assert raw.headers["x-gonka-inference-id"] == iid and len(iid) == 64
    choice = resp.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    u = resp.usage
    assert u.completion_tokens >= 1 and u.prompt_tokens >= 1
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.model_extra["cost"] == u.total_tokens  # price 1 per token
    # the same seed gives the same answer (deterministic sampling, fresh signature)
    again = client.chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=6,
        seed=7,
        temperature=0.8,
        top_p=0.9,
    )
    assert again.choices[0].message.content == choice.message.content
    assert again.model_extra["inference_id"] != iid
    # the ledger knows it
    rec = None
    for _ in range(100):
        r = httpx.get(served["url"] + f"v1/inferences/{iid}", timeout=30)
        if r.status_code == 200 and r.json()["status"] != "started":
            rec = r.json()
            break
        asyncio.run(asyncio.sleep(0.1))
    assert rec is not None, r.text
    assert rec["id"] == iid and rec["completion_tokens"] == u.completion_tokens
    assert rec["cost"] == u.model_extra["cost"]
    assert {"status", "validations", "refund", "executor_name"} <= set(rec)


def test_completion_with_logprobs(client) -> None:
    resp = client.completions.create(
        model="fake", prompt="Once upon a time", max_tokens=5, logprobs=3, seed=3
    )
    choice = resp.choices[0]
    lp = choice.logprobs
    n = resp.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n
    assert all(len(t) <= 3 for t in lp.top_logprobs) and any(len(t) == 3 for t in lp.top_logprobs)
    assert all(x <= 0.0 for x in lp.token_logprobs)
    assert lp.text_offset[0] == 0
    assert resp.model_extra["inference_id"]


def test_chat_logprobs_with_top_logprobs(client) -> None:
    resp = client.chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        logprobs=True,
        top_logprobs=10,
        seed=11,
    )
    content = resp.choices[0].logprobs.content
    assert len(content) == resp.usage.completion_tokens
    for tok in content:
        assert len(tok.top_logprobs) == 10
        lps = [t.logprob for t in tok.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        assert tok.logprob <= lps[0] + 1e-6
        assert tok.bytes == list(tok.token.encode())


def test_streaming_chat_and_completion(client) -> None:
    msgs = [{"role": "user", "content": "stream please"}]
    full = client.chat.completions.create(model="fake", messages=msgs, max_tokens=8, seed=5)
    stream = client.chat.completions.create(
        model="fake", messages=msgs, max_tokens=8, seed=5, stream=True, logprobs=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    ids = {c.model_extra["inference_id"] for c in chunks}
    assert len(ids) == 1 and ids != {full.model_extra["inference_id"]}
    with_lp = [c for c in chunks if c.choices and c.choices[0].logprobs]
    assert sum(len(c.choices[0].logprobs.content) for c in with_lp) == full.usage.completion_tokens
    comp = client.completions.create(model="fake", prompt="abc", max_tokens=4, seed=1, stream=True)
    parts = list(comp)
    assert parts[-1].usage is not None and parts[-1].choices[0].finish_reason
    assert sum(len(p.choices[0].text) for p in parts) >= 1


def test_models_health_and_ignored_fields(client, served) -> None:
    assert [m.id for m in client.models.list()] == ["fake"]
    health = httpx.get(served["url"] + "health", timeout=30)
    assert health.status_code == 200 and all(health.json()["transport_agents"].values())
    r = _post(
        served,
        "v1/chat/completions",
        {
            "model": "fake",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 2,
            "frequency_penalty": 0.5,
            "user": "me",
        },
        {"X-Gonka-TA": "p2"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-gonka-ignored-fields"] == "frequency_penalty,user"
    assert r.headers["x-gonka-ta"] == "p2"


def test_signed_request_and_its_replay(served) -> None:
    net = served["net"]
    env = sdk.sign_chat(
        net.client_key(0),
        model="fake",
        messages=[{"role": "user", "content": "signed"}],
        max_tokens=3,
        logprobs=5,
        chain=net.chain_id,
    )
    hdr = {"X-Gonka-Signed-Request": base64.b64encode(env).decode(), "X-Gonka-TA": "p1"}
    body = {"model": "ignored", "messages": [], "logprobs": True, "top_logprobs": 2}
    with httpx.Client(timeout=60) as h:
        r = h.post(served["url"] + "v1/chat/completions", json=body, headers=hdr)
        assert r.status_code == 200, r.text
        assert (
            r.json()["inference_id"]
            == __import__("gonka_ray.wire", fromlist=["x"]).envelope_id(env).hex()
        )
        assert r.headers["x-gonka-ignored-fields"] == "messages,model"
        assert len(r.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 2
        again = h.post(served["url"] + "v1/chat/completions", json=body, headers=hdr)
        assert again.status_code == 409, again.text
        assert _error(again)["code"] == "replayed_request"
        # a tampered envelope does not verify
        bad = bytearray(env)
        bad[-1] ^= 1
        hdr2 = {"X-Gonka-Signed-Request": base64.b64encode(bytes(bad)).decode()}
        r = h.post(served["url"] + "v1/chat/completions", json={}, headers=hdr2)
        assert r.status_code == 401, r.text


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("v1/chat/completions", b'{"model": "fake", "messages": [', 400, None),
        ("v1/chat/completions", b"[1, 2]", 400, None),
        ("v1/chat/completions", {"model": "fake"}, 400, "messages"),
        ("v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
        (
            "v1/chat/completions",
            {"model": "fake", "messages": [{"role": "user", "content": "x"}], "max_tokens": "lots"},
            400,
            "max_tokens",
        ),
        (
            "v1/chat/completions",
            {"model": "fake", "messages": "hello"},
            400,
            "messages",
        ),
        (
            "v1/chat/completions",
            {"model": "fake", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            400,
            "temperature",
        ),
        ("v1/completions", {"model": "fake", "prompt": 12}, 400, "prompt"),
        (
            "v1/completions",
            {"model": "fake", "prompt": "a" * 3000, "max_tokens": 8},
            400,
            "prompt",
        ),
        ("v1/completions", {"model": "fake", "prompt": "a", "max_tokens": 5000}, 400, "max_tokens"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(served, path, body, status, param) -> None:
    r = _post(served, path, body)
    assert r.status_code == status, r.text
    err = _error(r)
    if param is not None:
        assert err["param"] == param, err


def test_openai_client_errors(client) -> None:
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4", messages=msgs)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="fake", messages=msgs, n=2)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="fake", messages=msgs, logprobs=True, top_logprobs=21)
    assert e.value.body["param"] == "top_logprobs"
    bad_key = client.with_options(api_key="sk-wrong")
    with pytest.raises(openai.AuthenticationError):
        bad_key.chat.completions.create(model="fake", messages=msgs)
    poor = client.with_options(api_key=POOR_KEY)
    with pytest.raises(openai.APIStatusError) as e:
        poor.chat.completions.create(model="fake", messages=msgs, max_tokens=2)
    assert e.value.status_code == 402 and e.value.body["code"] == "insufficient_balance"


def test_missing_key_unknown_inference_and_unknown_ta(served) -> None:
    r = httpx.post(
        served["url"] + "v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "x"}]},
        timeout=30,
    )
    assert r.status_code == 401 and _error(r)["code"] == "invalid_api_key"
    r = httpx.get(served["url"] + "v1/inferences/" + "ab" * 32, timeout=30)
    assert r.status_code == 404 and _error(r)["code"] == "not_found"
    r = httpx.get(served["url"] + "v1/inferences/xyz", timeout=30)
    assert r.status_code == 400
    r = _post(
        served,
        "v1/chat/completions",
        {"model": "fake", "messages": [{"role": "user", "content": "x"}]},
        {"X-Gonka-TA": "nobody"},
    )
    assert r.status_code == 400 and _error(r)["param"] == "X-Gonka-TA"


def test_error_mapping_unwraps_ray_errors_and_sets_retry_after(ray_session) -> None:
    import ray

    @ray.remote
    def boom() -> None:
        raise InsufficientBalance("too poor")

    with pytest.raises(Exception) as e:
        ray.get(boom.remote())
    err = unwrap_error(e.value)
    assert isinstance(err, InsufficientBalance) and err.http_status == 402
    resp = error_response(Overloaded("busy", retry_after_s=2.0))
    assert resp.status_code == 429 and resp.headers["retry-after"] == "2"
    assert unwrap_error(ValueError("x")).http_status == 500
    assert isinstance(unwrap_error(ValueError("x")), GonkaError)


def test_cli_status_and_inference_attach_to_the_running_network(client) -> None:
    from click.testing import CliRunner

    from gonka_ray.cli import main

    resp = client.completions.create(model="fake", prompt="cli", max_tokens=2, seed=9)
    iid = resp.model_extra["inference_id"]
    attach = ["--network", "openaitest", "--namespace", "gonka_ray_tests"]
    result = CliRunner().invoke(main, ["status", *attach, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [p["participant"] for p in doc["participants"]] == ["p0", "p1", "p2"]
    assert all(p["weight"] == 100 and p["status"] != "INVALID" for p in doc["participants"])
    assert doc["epoch"]["phase"] and doc["epoch"]["epoch_end"] > doc["height"]
    table = CliRunner().invoke(main, ["status", *attach])
    assert table.exit_code == 0 and "reputation" in table.output and "p2" in table.output
    for _ in range(100):  # the Start commits in the background
        result = CliRunner().invoke(main, ["inference", iid, *attach])
        if result.exit_code == 0:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["id"] == iid
    missing = CliRunner().invoke(main, ["inference", "cd" * 32, *attach])
    assert missing.exit_code == 1 and "no inference" in missing.output
    wrong = CliRunner().invoke(
        main, ["status", "--network", "nope", "--namespace", "gonka_ray_tests"]
    )
    assert wrong.exit_code == 1 and "no network 'nope'" in wrong.output


def test_expired_and_misrouted_signed_requests(served) -> None:
    import time

    net = served["net"]
    url = served["url"] + "v1/"

    def header(env: bytes) -> dict:
        return {"X-Gonka-Signed-Request": base64.b64encode(env).decode()}

    old = sdk.sign_chat(
        net.client_key(0),
        model="fake",
        messages=[{"role": "user", "content": "late"}],
        max_tokens=2,
        clock=lambda: time.time() - 120,
        chain=net.chain_id,
    )
    r = httpx.post(url + "chat/completions", json={}, headers=header(old), timeout=60)
    assert r.status_code == 400 and _error(r)["code"] == "expired_request", r.text
    chat = sdk.sign_chat(
        net.client_key(0),
        model="fake",
        messages=[{"role": "user", "content": "x"}],
        chain=net.chain_id,
    )
    r = httpx.post(url + "completions", json={}, headers=header(chat), timeout=60)
    assert r.status_code == 400 and "chat/completions" in _error(r)["message"]
    r = httpx.post(
        url + "chat/completions", json={}, headers={"X-Gonka-Signed-Request": "%%%"}, timeout=60
    )
    assert r.status_code == 400 and _error(r)["param"] == "X-Gonka-Signed-Request"


def test_back_pressure_is_a_429_with_retry_after_before_any_work() -> None:
    """The ingress refuses beyond ``max_inflight`` without touching Ray (plain class)."""
    from gonka_ray.serve.ingress import GonkaIngress

    ingress = GonkaIngress(
        network="none",
        chain="none",
        namespace="none",
        participants={"p0": "addr0"},
        model="fake",
        api_keys={},
        max_inflight=0,
    )
    resp = asyncio.run(ingress._complete(request=None, kind="chat"))
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
    assert json.loads(resp.body)["error"]["code"] == "overloaded"
    assert ingress.inflight == 0


def test_a_second_app_under_a_prefix_reports_the_port_serve_really_uses(served) -> None:
    from ray import serve

    url = serve_network(
        served["net"], api_keys={"sk-alt": 0}, port=_free_port(), route_prefix="/alt", name="alt"
    )
    try:
        assert url == served["url"] + "alt/"  # Serve kept its first port
        alt = openai.OpenAI(base_url=url + "v1", api_key="sk-alt", max_retries=0)
        assert [m.id for m in alt.models.list()] == ["fake"]
        resp = alt.completions.create(model="fake", prompt="p", max_tokens=2)
        assert resp.usage.completion_tokens >= 1
        with pytest.raises(openai.AuthenticationError):
            alt.with_options(api_key=API_KEY).completions.create(model="fake", prompt="p")
    finally:
        serve.delete("alt")
