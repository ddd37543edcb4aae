"""Python SDK: sign requests with your own key and talk to a network's transport agents.

:func:`sign_chat` builds and signs an ``InferenceRequest`` (the inference id is
``sha256(signature)``). :class:`Client` sends it to a transport agent's actor handle and streams
the reply, in notebooks too (``await client.chat(...)`` or ``client.chat_sync(...)``).

:func:`connect` attaches to a network already running on a Ray cluster (found by its actors'
names, ``<network>.<participant>.<role>``) and returns a :class:`NetworkClient`: chat, stream,
inference status, balance, participants and ledger records straight through actor handles.
Every method is a coroutine (``await c.chat(...)`` in a notebook or an async app); each has a
blocking ``*_sync`` twin that runs on the client's own event-loop thread, so it works from plain
scripts and from inside a running loop alike (it never calls ``asyncio.run``).
:func:`openai_client` configures the official ``openai`` client against the HTTP front door.
"""

from __future__ import annotations

import asyncio
import os
import queue
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gonka_ray import crypto, wire
from gonka_ray.actors.clients import stream_call

# NOTE: re-exported (``from gonka_ray.sdk import sign_chat`` is the documented spelling); it
# lives in client_request so the HTTP ingress can sign without importing the SDK.
from gonka_ray.client_request import sign_chat
from gonka_ray.constants import SDK_CONNECT_TIMEOUT_S
from gonka_ray.raykit import keep_ray_on_loopback
from gonka_ray.serve.views import record_view

T = TypeVar("T")


@dataclass(frozen=True)
class ChatResult:
    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    done: wire.InferenceDone

    @property
    def inference_id(self) -> str:
        return self.done.inference_id.hex()


async def stream_items(ta: Any, envelope: bytes) -> AsyncIterator[Any]:
    """Decoded stream items (``StreamChunk``…, ``InferenceDone``) from a TA handle or object."""
    if hasattr(getattr(ta, "submit", None), "remote"):
        async for item in stream_call(ta.submit, envelope):
            yield wire.decode(item)
    else:
        async for item in ta.submit(envelope):
            yield wire.decode(item)


async def collect(
    ta: Any, envelope: bytes, on_text: Callable[[str], None] | None = None
) -> ChatResult:
    """Send ``envelope`` to ``ta`` and gather the reply; ``on_text`` sees each text delta."""
    text, ids, lps, done = [], [], [], None
    async for item in stream_items(ta, envelope):
        if isinstance(item, wire.StreamChunk):
            text.append(item.text)
            ids.append(item.token_id)
            lps.append(item.logprob)
            if on_text and item.text:
                on_text(item.text)
        elif isinstance(item, wire.InferenceDone):
            done = item
    if done is None:
        raise RuntimeError("stream ended without InferenceDone")
    return ChatResult("".join(text), tuple(ids), tuple(lps), done)


class _ChatClient:
    """What both clients share: requests signed with ``self.key`` for ``self.chain`` and
    ``self.model``, sent to the transport agent ``self._ta(name)`` returns."""

    key: crypto.KeyPair
    chain: str
    model: str

    def _ta(self, ta: str | None) -> Any:
        raise NotImplementedError

    def _sign(self, messages: Sequence[dict[str, str]] | None, prompt: str | None, **kw: Any):
        return sign_chat(
            self.key, chain=self.chain, model=self.model, messages=messages, prompt=prompt, **kw
        )

    async def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        ta: str | None = None,
        on_text: Callable[[str], None] | None = None,
        **sampling: Any,
    ) -> ChatResult:
        """One chat completion. ``sampling``: :func:`sign_chat`'s keywords (max_tokens,
        temperature, top_p, top_k, seed, logprobs, stop). ``ta`` names the transport agent
        (default: a random one). ``on_text`` is called with each piece of text as it arrives."""
        return await collect(self._ta(ta), self._sign(messages, None, **sampling), on_text)


class Client(_ChatClient):
    """A client with its own key, bound to transport agents (handles or objects).

    Args:
        key: the client's key (its address must hold a balance on the ledger).
        tas: transport agents; each request goes to a random one unless ``ta`` is named.
        model: the network's model id.
        chain: the network's chain id (its genesis ``chain_id``), bound into every signature.
    """

    def __init__(self, key: crypto.KeyPair, tas: dict[str, Any], model: str, *, chain: str) -> None:
        self.key = key
        self.tas = tas
        self.model = model
        self.chain = chain

    def _ta(self, ta: str | None) -> Any:
        if ta is not None:
            return self.tas[ta]
        return self.tas[secrets.choice(sorted(self.tas))]

    def chat_sync(self, messages: Sequence[dict[str, str]], **kw: Any) -> ChatResult:
        """Blocking :meth:`chat` (for scripts; in a notebook prefer ``await client.chat``)."""
        return asyncio.run(self.chat(messages, **kw))


# --- connect() ------------------------------------------------------------------------------


def init_ray(
    address: str = "auto", namespace: str | None = None, *, loopback: bool | None = None
) -> None:
    """Join the running Ray at ``address`` as a driver (no-op when Ray is already initialised).

    ``loopback`` binds this driver to 127.0.0.1 (a single-host Ray started by ``gonka-ray up``
    or the tests); False on a multi-host ``ray up`` cluster. Default: ``$GONKA_LOOPBACK`` (on).

    Raises:
        ConnectionError: no Ray is running at ``address``.
    """
    import ray

    from gonka_ray.constants import env

    if ray.is_initialized():
        return
    if loopback is None:
        loopback = env("GONKA_LOOPBACK")
    # NOTE: only a Ray that serves on loopback gets a loopback driver (Ray's module flag is
    # flipped): on a `ray up` head, `gonka-ray up --address auto` runs with loopback on by
    # default, and its 127.0.0.1 must still map to the address the head's raylet registered.
    if loopback and _serves_on_loopback(address):
        keep_ray_on_loopback()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    opts: dict[str, Any] = {"address": address, "namespace": namespace, "log_to_driver": False}
    try:
        ray.init(_node_ip_address="127.0.0.1" if loopback else None, **opts)
    except (ConnectionError, RuntimeError) as exc:
        raise ConnectionError(f"no running Ray at {address!r}: {exc}") from exc


def _serves_on_loopback(address: str) -> bool:
    """Whether the Ray at ``address`` (``"auto"``: ``$RAY_ADDRESS``, else the one this host
    started last) has its GCS on a loopback address, as ``gonka-ray up`` starts it."""
    from ray._private import services

    try:
        found = services.get_ray_address_from_environment(address, None)
    except Exception:  # no Ray found: ray.init says so
        return False
    host = str(found or "").rsplit(":", 1)[0]
    return host == "localhost" or host.startswith("127.")


def find_networks(namespace: str) -> dict[str, list[str]]:
    """Networks running in ``namespace``: name -> its participants (by their ledger actors)."""
    import ray

    found: dict[str, list[str]] = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] != namespace or not actor["name"].endswith(".ledger"):
            continue
        net_name, _, rest = actor["name"].partition(".")
        found.setdefault(net_name, []).append(rest.rsplit(".", 1)[0])
    return {n: sorted(p) for n, p in found.items()}


def demo_client_key(network: str, index: int = 0, seed: int = 0) -> crypto.KeyPair:
    """The demo client key a network's genesis funds (``gonka_ray.network.client_key``)."""
    return crypto.KeyPair.from_seed(f"{network}/{seed}/client/{index}")


def openai_client(
    base_url: str = "http://127.0.0.1:8000/v1", api_key: str | None = None, **kwargs: Any
) -> Any:
    """An ``openai.OpenAI`` client for a network's HTTP front door (``gonka-ray up`` prints
    the URL and an API key; ``api_key`` defaults to ``$OPENAI_API_KEY``)."""
    import openai

    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key:
        raise ValueError("pass api_key (the key `gonka-ray up` printed) or set OPENAI_API_KEY")
    return openai.OpenAI(base_url=base_url.rstrip("/"), api_key=key, **kwargs)


class _LoopThread:
    """A private event loop on a daemon thread: the ``*_sync`` methods run coroutines here, so
    they work whether or not the calling thread already runs a loop (Jupyter does)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="gonka-sdk")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        q: queue.Queue = queue.Queue()
        done = object()

        async def pump() -> None:
            try:
                async for item in agen:
                    q.put(item)
            except BaseException as exc:  # handed to the consumer's thread
                q.put(exc)
            q.put(done)

        asyncio.run_coroutine_threadsafe(pump(), self.loop)
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


class NetworkClient(_ChatClient):
    """A running network, through actor handles (made by :func:`connect`).

    Attributes:
        network, namespace: where the network's actors live.
        participant_names: the participants, sorted.
        model: the model id the network serves.
        key: the client key requests are signed with (its address pays).
    """

    def __init__(
        self,
        *,
        network: str,
        namespace: str,
        participants: Sequence[str],
        model: str,
        key: crypto.KeyPair,
        chain: str,
    ) -> None:
        self.network = network
        self.chain = chain
        self.namespace = namespace
        self.participant_names = list(participants)
        self.model = model
        self.key = key
        self._handles: dict[str, Any] = {}
        self._loop: _LoopThread | None = None

    def __repr__(self) -> str:
        return (
            f"NetworkClient(network={self.network!r}, participants={self.participant_names}, "
            f"model={self.model!r}, address={self.key.address!r})"
        )

    @property
    def address(self) -> str:
        return self.key.address

    # --- handles ---------------------------------------------------------------------------

    def handle(self, participant: str, role: str) -> Any:
        """The actor handle of ``participant``'s ``role`` (ta, executor, verifier, ledger,
        mlnode)."""
        import ray

        name = f"{self.network}.{participant}.{role}"
        if name not in self._handles:
            self._handles[name] = ray.get_actor(name, namespace=self.namespace)
        return self._handles[name]

    def _ta(self, ta: str | None) -> Any:
        if ta is not None and ta not in self.participant_names:
            raise ValueError(f"no participant {ta!r} in {self.network}: {self.participant_names}")
        return self.handle(ta or secrets.choice(self.participant_names), "ta")

    async def _ledger(self, method: str, *args: Any) -> Any:
        last: Exception | None = None
        for name in self.participant_names:  # the first replica that answers
            try:
                return await getattr(self.handle(name, "ledger"), method).remote(*args)
            except Exception as exc:
                last = exc
                self._handles.pop(f"{self.network}.{name}.ledger", None)
        raise ConnectionError(f"no ledger replica of {self.network} answers: {last!r}")

    # --- inference -------------------------------------------------------------------------

    async def complete(self, prompt: str, *, ta: str | None = None, **sampling: Any) -> ChatResult:
        """One plain-text completion of ``prompt``."""
        return await collect(self._ta(ta), self._sign(None, prompt, **sampling))

    async def stream(
        self, messages: Sequence[dict[str, str]], *, ta: str | None = None, **sampling: Any
    ) -> AsyncIterator[wire.StreamChunk | wire.InferenceDone]:
        """The reply as it is generated: ``StreamChunk`` items (``.text``, ``.token_id``,
        ``.logprob``), then one ``InferenceDone`` (inference id, usage, cost)."""
        async for item in stream_items(self._ta(ta), self._sign(messages, None, **sampling)):
            yield item

    # --- ledger queries --------------------------------------------------------------------

    async def inference(self, inference_id: str | bytes) -> dict[str, Any] | None:
        """The ledger record of an inference (status, validations, votes, cost, refund) as a
        dict, or None while the ledger does not know it."""
        iid = bytes.fromhex(inference_id) if isinstance(inference_id, str) else inference_id
        record = await self._ledger("inference", iid)
        if record is None:
            return None
        return record_view(record, await self._names())

    async def wait_inference(
        self, inference_id: str | bytes, *, timeout_s: float = 30.0, until: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Poll :meth:`inference` until the ledger has it (and, if ``until`` names statuses,
        until it reaches one of them).

        Raises:
            TimeoutError: not there within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            rec = await self.inference(inference_id)
            if rec is not None and (not until or rec["status"] in until):
                return rec
            if time.monotonic() > deadline:
                raise TimeoutError(f"inference not {'/'.join(until) or 'recorded'} in time")
            await asyncio.sleep(0.1)

    async def balance(self, address: str | None = None) -> int:
        """Committed balance of ``address`` (default: this client's)."""
        return int(await self._ledger("balance", address or self.key.address))

    async def participants(self) -> list[dict[str, Any]]:
        """Every participant: name, address, weight, reputation, status and counters."""
        infos = await self._ledger("participants")
        return [
            {
                "name": p.name,
                "address": p.address,
                "weight": p.weight,
                "reputation": p.reputation,
                "status": p.status,
                "served": p.record.served,
                "validations_done": p.record.validations_done,
                "invalidated_total": p.record.invalidated_total,
                "pending_fees": p.record.pending_fees,
            }
            for p in sorted(infos.values(), key=lambda p: p.name)
        ]

    async def records(self, limit: int = 20) -> list[dict[str, Any]]:
        """The ledger's most recent inference records, newest first."""
        recs = await self._ledger("inferences", limit)
        names = await self._names()
        return [record_view(r, names) for r in recs]

    async def height(self) -> int:
        """The ledger's committed (applied) height."""
        return int(await self._ledger("height"))

    async def _names(self) -> dict[str, str]:
        return {a: p.name for a, p in (await self._ledger("participants")).items()}

    # --- blocking twins --------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            self._loop = _LoopThread()
        return self._loop.run(coro)

    def chat_sync(self, messages: Sequence[dict[str, str]], **kw: Any) -> ChatResult:
        return self._run(self.chat(messages, **kw))

    def complete_sync(self, prompt: str, **kw: Any) -> ChatResult:
        return self._run(self.complete(prompt, **kw))

    def stream_sync(
        self, messages: Sequence[dict[str, str]], **kw: Any
    ) -> Iterator[wire.StreamChunk | wire.InferenceDone]:
        if self._loop is None:
            self._loop = _LoopThread()
        return self._loop.iterate(self.stream(messages, **kw))

    def inference_sync(self, inference_id: str | bytes) -> dict[str, Any] | None:
        return self._run(self.inference(inference_id))

    def wait_inference_sync(self, inference_id: str | bytes, **kw: Any) -> dict[str, Any]:
        return self._run(self.wait_inference(inference_id, **kw))

    def balance_sync(self, address: str | None = None) -> int:
        return self._run(self.balance(address))

    def participants_sync(self) -> list[dict[str, Any]]:
        return self._run(self.participants())

    def records_sync(self, limit: int = 20) -> list[dict[str, Any]]:
        return self._run(self.records(limit))

    def height_sync(self) -> int:
        return self._run(self.height())

    # --- HTTP ------------------------------------------------------------------------------

    def openai(self, api_key: str, base_url: str | None = None, **kwargs: Any) -> Any:
        """An ``openai.OpenAI`` client for this network's HTTP app; ``base_url`` defaults to
        where Ray Serve's proxy listens on this cluster (plus ``/v1``)."""
        if base_url is None:
            from gonka_ray.serve.deployment import _bound

            host, port = _bound(8000)
            base_url = f"http://{host}:{port}/v1"
        return openai_client(base_url, api_key, **kwargs)

    def close(self) -> None:
        """Stop the thread behind the ``*_sync`` methods (the Ray connection stays)."""
        if self._loop is not None:
            self._loop.close()
            self._loop = None


def connect(
    network: str | None = None,
    *,
    address: str = "auto",
    namespace: str | None = None,
    key: crypto.KeyPair | str | Path | None = None,
    model: str | None = None,
    loopback: bool | None = None,
    timeout_s: float = SDK_CONNECT_TIMEOUT_S,
) -> NetworkClient:
    """Attach to a network running on Ray and return a :class:`NetworkClient`.

    Args:
        network: the network's name (default: the only one in ``namespace``).
        address: the Ray to join when this process has not called ``ray.init`` yet.
        namespace: the network's Ray namespace (default ``$GONKA_NAMESPACE``).
        key: the client's key: a :class:`~gonka_ray.crypto.KeyPair` or a key file path
            (``gonka-ray keys new``). Default: the network's demo client account (funded by the
            demo genesis of a config with ``seed: 0``).
        model: the model id (default: asked from the first participant's MLNode).
        loopback: bind this driver to 127.0.0.1 (single-host Ray); False on a ``ray up``
            cluster (default: ``$GONKA_LOOPBACK``, on).
        timeout_s: how long to wait for the network's actors to appear.

    Raises:
        ConnectionError: no Ray at ``address``.
        LookupError: no such network (or several and none named).
    """
    from gonka_ray.constants import env

    namespace = namespace or env("GONKA_NAMESPACE")
    init_ray(address, namespace, loopback=loopback)
    deadline = time.monotonic() + timeout_s
    while True:
        found = find_networks(namespace)
        if network is None and len(found) == 1:
            network = next(iter(found))
        if network is not None and network in found:
            break
        if time.monotonic() > deadline:
            listed = ", ".join(sorted(found)) or "none"
            what = f"no network {network!r}" if network else "name the network"
            raise LookupError(f"{what} (networks in namespace {namespace!r}: {listed})")
        time.sleep(0.5)
    if isinstance(key, str | Path):
        key = crypto.KeyPair.load(key)
    import ray

    first = found[network][0]
    chain = ray.get(
        ray.get_actor(f"{network}.{first}.ledger", namespace=namespace).chain_id.remote()
    )
    client = NetworkClient(
        network=network,
        namespace=namespace,
        participants=found[network],
        model=model or "",
        key=key or demo_client_key(network),
        chain=chain,
    )
    if not model:
        info = ray.get(client.handle(client.participant_names[0], "mlnode").model_info.remote())
        client.model = info.name
    return client
