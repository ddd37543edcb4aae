"""The ``gonka-ray`` command line (click)."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from gonka_ray.constants import DEFAULT_MODEL
from gonka_ray.exceptions import GonkaError
from gonka_ray.wire import parse_address


def _key_file_option(dest: str, help: str, **kw):
    """``--key FILE`` (a key file; need not exist yet) into ``dest``."""
    return click.option(
        "--key", dest, type=click.Path(dir_okay=False, path_type=Path), help=help, **kw
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """gonka_ray: decentralized, verifiable LLM inference on Ray."""


@main.group()
def keys() -> None:
    """Manage Ed25519 participant and client keys."""


@keys.command("new")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keys_new(path: Path) -> None:
    """Create a new key file at PATH (mode 0600; never overwrites); prints its address and its
    public key (what a network config's ``public_key`` names)."""
    from gonka_ray.crypto import KeyPair

    key = KeyPair.generate()
    try:
        key.save(path)
    except GonkaError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{key.address}  {key.public_key.hex()}  {path}")


@main.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="model id")
@click.option("--cheat", default="int4", show_default=True, help="p3's cheat (an adversary kind)")
@click.option(
    "--engine", default="transformers", type=click.Choice(["transformers", "vllm", "fake"])
)
@click.option("--requests", default=32, show_default=True, type=click.IntRange(2, 10_000))
@click.option("--max-tokens", default=24, show_default=True, type=click.IntRange(1, 4096))
@click.option("--join/--no-join", default=True, show_default=True, help="p4 joins mid-run")
@click.option(
    "--epoch",
    "epoch_overrides",
    multiple=True,
    help="KEY=INT: override one of the demo's epoch settings (e.g. epoch_blocks=200)",
)
@click.option(
    "--results",
    default="benchmarks/results/demo.json",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
def demo(
    model: str,
    cheat: str,
    engine: str,
    requests: int,
    max_tokens: int,
    join: bool,
    epoch_overrides: tuple[str, ...],
    results: Path,
) -> None:
    """Four participants, each its own Ray cluster on loopback, one cheating, a fifth joining
    mid-run: serve, verify, vote, refund, kick out."""
    import asyncio

    from gonka_ray.demo import DEMO_JOINER, demo_network_config, run_demo

    epoch = _int_pairs(epoch_overrides, "--epoch", "KEY=INT", signed=True)
    try:
        config = demo_network_config(model, cheat, engine, epoch=epoch)
    except GonkaError as exc:
        raise click.ClickException(exc.message) from None
    from gonka_ray.federation import stop_on_signals

    # SIGTERM stops it like Ctrl-C: its nodes are stopped, not left running
    stop_on_signals(signal.SIGTERM)
    report = asyncio.run(
        run_demo(
            config,
            requests=requests,
            max_tokens=max_tokens,
            joiner=DEMO_JOINER if join else None,
            results_path=results,
        )
    )
    caught = report.summary["cheaters_caught"] == report.summary["cheaters"]
    click.echo("the cheater was caught and kicked out" if caught else "WARNING: cheater not caught")
    if join:
        s = report.summary
        click.echo(
            f"{DEMO_JOINER} joined mid-run: served {s['joiner_served']}, "
            f"checked {s['joiner_validated']} of the others' inferences"
        )


@main.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="model id")
@click.option("--prompt", default="What is the capital of France? Answer in one sentence.")
@click.option("--max-tokens", default=48, show_default=True, type=click.IntRange(1, 4096))
def chat(model: str, prompt: str, max_tokens: int) -> None:
    """Load the embedded model locally (no network) and answer one chat prompt."""
    import torch

    from gonka_ray.engine.models import load_hf

    t0 = time.perf_counter()
    try:
        hf_model, tok = load_hf(model)
    except GonkaError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"loaded {model} in {time.perf_counter() - t0:.1f} s")
    ids = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
    )["input_ids"]
    t0 = time.perf_counter()
    with torch.no_grad():
        out = hf_model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    click.echo(f"user> {prompt}\nassistant> {answer.strip()}")
    click.echo(f"({out.shape[1] - ids.shape[1]} tokens in {time.perf_counter() - t0:.1f} s)")


@main.command()
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(path_type=Path))
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--api-key",
    default=None,
    help="API key bound to the demo client account (default: a fresh random key)",
)
@click.option("--num-cpus", default=None, type=click.IntRange(1, 4096), help="local Ray CPUs")
@click.option("--namespace", default=None, help="Ray namespace (default: $GONKA_NAMESPACE)")
@click.option(
    "--address",
    default=None,
    help="join this running Ray (e.g. `auto` on a `ray up` head) instead of a loopback one",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP bind address")
@click.option(
    "--federated",
    is_flag=True,
    help="each participant in a Ray cluster of its own (one `gonka-ray node` process each, "
    "fresh keys, loopback; HTTP ports PORT, PORT+1, ...)",
)
def up(
    config_path: Path,
    port: int,
    api_key: str | None,
    num_cpus: int | None,
    namespace: str | None,
    address: str | None,
    host: str,
    federated: bool,
) -> None:
    """Start the network of CONFIG.yaml on Ray, serve it over HTTP, run until Ctrl-C.

    Without --address a loopback Ray is started here; with it (``ray up`` clusters) the network
    joins that cluster and each participant's actors go where its ``resources`` say."""
    import asyncio
    import os
    import secrets

    from gonka_ray.config import load_config

    try:
        config = load_config(config_path)
    except GonkaError as exc:
        raise click.ClickException(exc.message) from None
    from gonka_ray.network import init_local_ray, launch, wait_ready
    from gonka_ray.serve.deployment import serve_network, shutdown

    api_key = api_key or "sk-gonka-" + secrets.token_hex(16)
    if federated:
        if address:
            raise click.UsageError("--federated starts its own Ray clusters: drop --address")
        _up_federated(config, api_key, port)
        return
    if address:
        from gonka_ray.sdk import init_ray

        try:
            init_ray(address, namespace)
        except ConnectionError as exc:
            raise click.ClickException(str(exc)) from None
    else:
        init_local_ray(num_cpus=num_cpus or max(4, os.cpu_count() or 1))
    click.echo(
        f"launching {config.name}: {len(config.participants)} participants, "
        f"model {config.model.name} ({config.engine.kind} engine) ..."
    )
    t0 = time.perf_counter()
    # NOTE: SIGTERM (systemd, Docker, Kubernetes) stops the network like Ctrl-C: drain, flush the
    # ledger, kill the actors, exit 0. Installed after Ray is up, so it replaces Ray's handler.
    from gonka_ray.federation import stop_on_signals

    stop_on_signals()
    net = None

    def start() -> None:
        nonlocal net
        net = launch(config, namespace=namespace)
        asyncio.run(wait_ready(net))
        click.echo(f"network ready in {time.perf_counter() - t0:.0f} s")
        url = serve_network(net, api_keys={api_key: 0}, port=port, host=host)
        click.echo(f"serving {url}v1  (OpenAI-compatible)")
        click.echo(f"api key: {api_key}")
        click.echo(
            'try:  python -c "import openai; c = openai.OpenAI('
            f"base_url='{url}v1', api_key='{api_key}'); print(c.chat.completions.create("
            f"model='{config.model.name}', messages=[{{'role': 'user', 'content': 'hi'}}])"
            '.choices[0].message.content)"'
        )
        click.echo(f"status: gonka-ray status --network {config.name} --namespace {net.namespace}")

    def stop() -> None:
        try:
            shutdown()  # Serve drains its in-flight HTTP requests first
        except Exception:  # serve never started
            pass
        if net is not None:
            done = net.stop()
            click.echo(
                f"stopped: {done['drained']} roles drained, {done['flushed']} ledgers flushed"
            )

    _until_stopped(start, stop)


def _until_stopped(start: Callable[[], None], stop: Callable[[], None]) -> None:
    """``start``, then serve until Ctrl-C or SIGTERM (a KeyboardInterrupt once
    ``stop_on_signals`` is installed), then ``stop``, also when ``start`` failed. A second
    signal while stopping is ignored: it must not cut the drain short with a traceback."""
    try:
        start()
        click.echo("Ctrl-C (or SIGTERM) to stop")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt as exc:
        click.echo(f"stopping ({exc or 'SIGINT'}) ...")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop()


def _node_options(command):
    """The options ``node`` and ``join`` share (a node is a node, whether it was in the
    genesis or joined later)."""
    options = [
        click.argument("config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path)),
        click.option("--participant", required=True, help="which participant this node runs"),
        click.option(
            "--state",
            "state_dir",
            required=True,
            type=click.Path(file_okay=False, path_type=Path),
            help="its ledger, payloads and keys live here (kept across restarts)",
        ),
        click.option(
            "--port",
            "http_port",
            default=8000,
            show_default=True,
            help="HTTP port of its front door",
        ),
        click.option("--host", default="127.0.0.1", show_default=True, help="HTTP bind address"),
        click.option(
            "--api-key",
            "api_keys",
            multiple=True,
            help="KEY=CLIENT_INDEX: an API key bound to a demo client account (repeatable)",
        ),
        click.option(
            "--ready-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="write the node's addresses here (JSON) once it serves",
        ),
        click.option(
            "--address",
            default=None,
            help="join this running Ray cluster of the participant (e.g. `auto` on its `ray up` "
            "head) instead of starting one",
        ),
        click.option(
            "--peer-listen-host",
            default=None,
            help="bind the peer endpoint here (e.g. 0.0.0.0 behind a NAT) instead of the host "
            "of the participant's peer address",
        ),
        click.option("--num-cpus", default=4, show_default=True, type=click.IntRange(1, 4096)),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _api_keys(api_keys: tuple[str, ...]) -> dict[str, int]:
    return _int_pairs(api_keys, "--api-key", "KEY=CLIENT_INDEX")


def _int_pairs(
    items: tuple[str, ...], option: str, form: str, *, signed: bool = False
) -> dict[str, int]:
    """``KEY=INT`` option values as a dict (``signed``: the integer may be negative).

    Raises:
        click.BadParameter: an item is not of that form.
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        digits = value[1:] if signed and value.startswith("-") else value
        if not sep or not digits.isdigit():
            raise click.BadParameter(f"{item!r} is not {form}", param_hint=option)
        out[key] = int(value)
    return out


@main.command()
@_node_options
@click.option(
    "--key",
    "key_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the participant's secret key file (gonka-ray keys new); needed when CONFIG names "
    "its public_key",
)
def node(config_path: Path, api_keys: tuple[str, ...], **options) -> None:
    """Run one participant of CONFIG in a Ray cluster of its own, until Ctrl-C or SIGTERM.

    It reaches the other participants only over the peer transport, at the ``peer_address``
    each one names in CONFIG; it serves the OpenAI-compatible API on --port."""
    from gonka_ray.config import load_config
    from gonka_ray.federation import run_node

    try:
        config = load_config(config_path)
        run_node(config, api_keys=_api_keys(api_keys), echo=click.echo, **options)
    except GonkaError as exc:
        raise click.ClickException(exc.message) from None


@main.command()
@_node_options
@click.option(
    "--peers",
    required=True,
    help="HOST:PORT[,...]: peer endpoints of the running network to register through",
)
@_key_file_option(
    "key_file",
    "this participant's secret key file (created, mode 0600, when missing)",
    required=True,
)
@click.option(
    "--peer-address",
    default=None,
    help="HOST:PORT where the others reach this participant's peer endpoint (default: a free "
    "loopback port)",
)
def join(config_path: Path, api_keys: tuple[str, ...], peers: str, **options) -> None:
    """Join the running network of CONFIG (its genesis) as a new participant, until Ctrl-C.

    Registers its key and peer endpoint with a signed transaction through --peers (no genesis
    edit), syncs the ledger from the peers, runs Proof of Compute in the next epoch and, with
    the weight it earns, is drawn as an executor, validates others and votes in the ledger
    from the next epoch boundary on. It serves the OpenAI-compatible API on --port."""
    from gonka_ray.config import load_config
    from gonka_ray.federation import run_node

    try:
        config = load_config(config_path)
        join_peers = [p.strip() for p in peers.split(",") if p.strip()]
        for p in join_peers:
            try:
                parse_address(p)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--peers") from None
        run_node(
            config,
            api_keys=_api_keys(api_keys),
            join_peers=join_peers,
            echo=click.echo,
            **options,
        )
    except GonkaError as exc:
        raise click.ClickException(exc.message) from None


def _up_federated(config, api_key: str, port: int) -> None:
    """``up --federated``: a local federation until Ctrl-C / SIGTERM (each node stops itself
    gracefully on the SIGTERM passed on to it)."""
    import tempfile

    from gonka_ray.federation import LocalFederation, stop_on_signals

    root = Path(config.ledger.storage_dir or tempfile.mkdtemp(prefix="gonka_federation_"))
    ports = {p.name: port + i for i, p in enumerate(config.participants)}
    fed = LocalFederation(config, root, api_keys={api_key: 0}, http_ports=ports)
    click.echo(f"starting {len(ports)} participants, each its own Ray cluster (files: {root}) ...")
    stop_on_signals()

    def start() -> None:
        fed.start()
        for name, info in sorted(fed.wait_ready().items()):
            click.echo(f"{name}: serving {info.url}v1  (peer {info.peer_address})")
        click.echo(f"api key: {api_key} (any participant's front door)")

    def stop() -> None:
        codes = fed.stop()
        click.echo(f"stopped: {sum(c == 0 for c in codes.values())} of {len(codes)} cleanly")

    _until_stopped(start, stop)


def _attach(address: str, namespace: str | None, network: str | None):
    """Join a running Ray and find the network's ledger replicas: (network, namespace, names)."""
    from gonka_ray.constants import env
    from gonka_ray.sdk import find_networks, init_ray

    namespace = namespace or env("GONKA_NAMESPACE")
    try:
        init_ray(address, namespace)
    except ConnectionError as exc:
        raise click.ClickException(str(exc)) from None
    found = find_networks(namespace)
    if network is None:
        if len(found) != 1:
            listed = ", ".join(sorted(found)) or "none"
            raise click.ClickException(
                f"name the network with --network (networks in namespace {namespace!r}: {listed})"
            )
        network = next(iter(found))
    if network not in found:
        raise click.ClickException(f"no network {network!r} in namespace {namespace!r}")
    return network, namespace, sorted(found[network])


def _attach_options(fn):
    fn = click.option("--network", default=None, help="network name (default: the only one)")(fn)
    fn = click.option(
        "--namespace", default=None, help="Ray namespace (default: $GONKA_NAMESPACE)"
    )(fn)
    return click.option("--address", default="auto", show_default=True, help="Ray address")(fn)


@main.command()
@_attach_options
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(address: str, namespace: str | None, network: str | None, as_json: bool) -> None:
    """Participants of a running network: weight, reputation, status, fees."""
    import asyncio
    import json

    import ray

    network, namespace, names = _attach(address, namespace, network)
    ledger = ray.get_actor(f"{network}.{names[0]}.ledger", namespace=namespace)

    async def query():
        try:
            view = await ledger.epoch_view.remote()
            epoch = {"epoch": view.epoch, "phase": str(view.phase), "epoch_end": view.epoch_end}
        except Exception:  # a ledger without epochs
            epoch = None
        return await ledger.participants.remote(), await ledger.height.remote(), epoch

    infos, height, epoch = asyncio.run(query())
    rows = [
        {
            "participant": p.name,
            "address": p.address,
            "weight": p.weight,
            "reputation": p.reputation,
            "status": p.status,
            "fees_pending": p.record.pending_fees,
        }
        for p in sorted(infos.values(), key=lambda p: p.name)
    ]
    if as_json:
        doc = {"network": network, "height": height, "epoch": epoch, "participants": rows}
        click.echo(json.dumps(doc))
        return
    at = f", epoch {epoch['epoch']} ({epoch['phase']})" if epoch else ""
    click.echo(f"network {network} (namespace {namespace}), ledger height {height}{at}")
    cols = ["participant", "weight", "reputation", "status", "fees_pending", "address"]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        click.echo("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))


@main.command()
@click.argument("inference_id")
@_attach_options
def inference(address: str, namespace: str | None, network: str | None, inference_id: str) -> None:
    """The ledger record of INFERENCE_ID (64 hex chars) as JSON: status, validations, refund."""
    import asyncio
    import json

    import ray

    from gonka_ray.serve.views import record_view

    try:
        iid = bytes.fromhex(inference_id)
    except ValueError:
        iid = b""
    if len(iid) != 32:
        raise click.BadParameter("an inference id is 64 hex characters", param_hint="INFERENCE_ID")
    network, namespace, names = _attach(address, namespace, network)
    ledger = ray.get_actor(f"{network}.{names[0]}.ledger", namespace=namespace)

    async def query():
        return await ledger.inference.remote(iid), await ledger.participants.remote()

    record, infos = asyncio.run(query())
    if record is None:
        raise click.ClickException(f"no inference {inference_id} on network {network}")
    view = record_view(record, {a: p.name for a, p in infos.items()})
    click.echo(json.dumps(view, indent=2))


@main.command()
@_attach_options
@click.option("--url", default=None, help="bench over HTTP: the app's base URL (no /v1)")
@click.option("--api-key", default=None, help="API key for --url (default: $OPENAI_API_KEY)")
@_key_file_option(
    "key_path", "over Ray: sign with this key file (default: the demo client account)"
)
@click.option(
    "--requests", "n_requests", default=32, show_default=True, type=click.IntRange(1, 1_000_000)
)
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 4096))
@click.option("--max-tokens", default=16, show_default=True, type=click.IntRange(1, 4096))
@click.option("--prompt", default="Write one sentence about the sea.", show_default=True)
@click.option("--model", default=None, help="model id (default: the network's)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def bench(
    address: str,
    namespace: str | None,
    network: str | None,
    url: str | None,
    api_key: str | None,
    key_path: Path | None,
    n_requests: int,
    concurrency: int,
    max_tokens: int,
    prompt: str,
    model: str | None,
    as_json: bool,
) -> None:
    """Closed-loop load: CONCURRENCY clients each send a chat request as soon as their last one
    finished, until REQUESTS are done; prints requests, errors, p50/p99 latency and tokens/s.

    Over Ray through actor handles (the network on --address/--namespace/--network), or over
    HTTP with --url and --api-key (any OpenAI-compatible front door of a network)."""
    import asyncio
    import json
    import os

    from gonka_ray.bench import format_table, run_closed_loop

    messages = [{"role": "user", "content": prompt}]
    if url:
        import httpx

        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise click.UsageError("--url needs --api-key (or $OPENAI_API_KEY)")
        endpoint = url.rstrip("/") + "/v1/chat/completions"
        target = url
        try:
            model_id = model or _http_model(url, key)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach {url}: {exc}") from None
        body = {"model": model_id, "messages": messages, "max_tokens": max_tokens}

        def make_send():
            http = httpx.AsyncClient(timeout=600, headers={"Authorization": f"Bearer {key}"})

            async def send() -> int:
                r = await http.post(endpoint, json=body)
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
                return int(r.json()["usage"]["completion_tokens"])

            return send, http.aclose
    else:
        from gonka_ray.sdk import connect

        try:
            client = connect(
                network, address=address, namespace=namespace, key=key_path, model=model
            )
        except (ConnectionError, LookupError) as exc:
            raise click.ClickException(str(exc)) from None
        target = f"{client.network} (Ray, namespace {client.namespace})"

        def make_send():
            async def send() -> int:
                res = await client.chat(messages, max_tokens=max_tokens)
                return res.done.completion_tokens

            async def close() -> None:
                return None

            return send, close

    async def go():
        send, close = make_send()
        try:
            return await run_closed_loop(send, n_requests, concurrency, progress=not as_json)
        finally:
            await close()

    result = asyncio.run(go())
    result["target"] = target
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(format_table(result))
    if result["ok"] == 0:
        raise click.ClickException(f"every request failed: {result['first_error']}")


def _http_model(url: str, key: str) -> str:
    """The first model a front door lists."""
    import httpx

    r = httpx.get(
        url.rstrip("/") + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    r.raise_for_status()
    return r.json()["data"][0]["id"]


def run() -> None:  # pragma: no cover - console entry
    try:
        main()
    except GonkaError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
