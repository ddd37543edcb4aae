"""A federation on one machine: every participant its own Ray cluster, in its own process.

Participants share nothing but the network config (genesis, keys of the demo seed, peer
addresses) and talk only over the signed peer transport. This module has both sides:

- :func:`run_node` — the body of ``gonka-ray node CONFIG --participant NAME``: start a Ray
  cluster of its own (``address="local"``, its own ports), launch that participant's actors
  (:func:`~gonka_ray.network.launch` with ``only``), serve its OpenAI-compatible front door, write
  a ready file (:class:`NodeInfo`) and run until SIGTERM/SIGINT (graceful stop).
- :func:`register_with_peers` — how a participant outside the genesis joins a running network
  (``gonka-ray join``): as a guest of a peer it hands over its signed registration and
  endpoint, then :func:`run_node` launches it at the place the registration got.
- :class:`LocalFederation` — starts one ``gonka-ray node`` process per participant on
  loopback, with peer addresses and HTTP ports chosen here, waits for their ready files and
  stops them (SIGTERM, then SIGKILL after a grace period); :meth:`LocalFederation.join` starts
  a ``gonka-ray join`` process for a newcomer. It reaches the nodes only the way anyone would:
  their HTTP front doors.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from gonka_ray import crypto, wire
from gonka_ray.config import NetworkConfig
from gonka_ray.constants import (
    FEDERATION_JOIN_RETRY_S,
    FEDERATION_JOIN_TIMEOUT_S,
    FEDERATION_NODE_START_TIMEOUT_S,
    FEDERATION_NODE_STOP_GRACE_S,
    FEDERATION_OBJECT_STORE_BYTES,
)
from gonka_ray.exceptions import (
    ConfigError,
    JoinRefused,
    PeerCallFailed,
    PeerProtocolError,
    PeerUnavailable,
)
from gonka_ray.peer.tcp import loopback_addresses


@dataclass(frozen=True)
class NodeInfo:
    """What a running node writes to its ready file (JSON)."""

    participant: str
    pid: int
    gcs_address: str  # its own Ray cluster
    peer_address: str  # its peer endpoint
    url: str  # its OpenAI-compatible front door (``url + "v1"`` for the openai client)

    @classmethod
    def read(cls, path: Path) -> NodeInfo:
        return cls(**json.loads(path.read_text()))


def with_peer_addresses(config: NetworkConfig, host: str = "127.0.0.1") -> NetworkConfig:
    """``config`` with every participant's ``peer_address`` set (free ports on ``host`` for the
    ones that name none), so that separate processes agree on where each one listens."""
    missing = [p for p in config.participants if p.peer_address is None]
    free = iter(loopback_addresses(len(missing), host))
    participants = [
        p if p.peer_address else p.model_copy(update={"peer_address": next(free)})
        for p in config.participants
    ]
    return config.model_copy(update={"participants": participants})


def load_or_create_key(path: Path) -> crypto.KeyPair:
    """The key in ``path``, or a new one saved there (mode 0600) when there is no such file."""
    if path.exists():
        return crypto.KeyPair.load(path)
    key = crypto.KeyPair.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    key.save(path)
    return key


async def register_with_peers(
    config: NetworkConfig,
    key: crypto.KeyPair,
    name: str,
    endpoint: str,
    peers: list[str],
    *,
    timeout_s: float = FEDERATION_JOIN_TIMEOUT_S,
    retry_s: float = FEDERATION_JOIN_RETRY_S,
) -> tuple[int, list[tuple[bytes, str | None]]]:
    """Make ``key`` a participant of ``config``'s running network, reachable at ``endpoint``:
    as a guest of the first of ``peers`` that answers, sign and hand over the registration
    (once: a key already registered is not registered again) and the endpoint announcement
    (when the ledger names another). Returns the place its registration got in the peer
    directory and the directory, from that peer (checked by the joiner's own replica once it
    has synced: a lying peer gets it nowhere, as the others' directories disagree).

    Raises:
        JoinRefused: the network refused a transaction (``reason``: its receipt's), the peer's
            genesis is not the one ``config`` gives (``"genesis_mismatch"``: other rule
            parameters, its replica could not follow the chain), or no peer answered within
            ``timeout_s`` (``"unreachable"``).
    """
    from gonka_ray.network import build_genesis
    from gonka_ray.peer.guest import GuestLink

    ours = build_genesis(config)  # what launch() will run this replica with
    chain, genesis = ours.chain_id, wire.digest(ours)
    deadline = time.monotonic() + timeout_s
    errors: list[str] = []
    while True:
        for peer in peers:
            try:
                async with GuestLink(key=key, chain_id=chain, address=peer) as link:
                    return await _register_on(link, key, name, endpoint, genesis)
            except (PeerUnavailable, PeerCallFailed, PeerProtocolError) as exc:
                errors.append(f"{peer}: {exc}")
        if time.monotonic() + retry_s > deadline:
            raise JoinRefused(
                f"no peer took the registration: {'; '.join(errors[-len(peers) :])}",
                reason="unreachable",
            )
        await asyncio.sleep(retry_s)


async def _register_on(
    link: Any, key: crypto.KeyPair, name: str, endpoint: str, genesis: bytes
) -> tuple[int, list[tuple[bytes, str | None]]]:
    from gonka_ray.peer.guest import JOIN_SUBMIT, join_directory

    async def submit(message: Any) -> None:
        reply = await link.call(JOIN_SUBMIT, wire.seal(message, key, link.chain_id))
        if not reply:  # not committed in time: ask again (the retry reads the ledger afresh)
            raise PeerUnavailable("the transaction did not commit in time")
        receipt = wire.decode(reply, wire.TxReceipt)
        if not receipt.ok:
            raise JoinRefused(
                f"{type(message).__name__} refused: {receipt.reason}", reason=receipt.reason
            )

    directory, nonce, theirs = await join_directory(link, key.address)
    if theirs != genesis:  # before anything is signed: nothing to undo
        raise JoinRefused(
            "this config's genesis is not the network's (another price, expiry window or "
            "epoch parameter?): a replica started from it could not follow the chain",
            reason="genesis_mismatch",
        )
    place = _place(directory, key.public_key)
    if place is None:
        await submit(wire.RegisterParticipant(name=name, weight=0, nonce=nonce))
        nonce += 1
    if place is None or directory[place][1] != endpoint:
        await submit(wire.PeerEndpoint(endpoint=endpoint, nonce=nonce))
        directory, _, _ = await join_directory(link, key.address)
        place = _place(directory, key.public_key)
    if place is None:
        raise PeerUnavailable("registered, but not in that peer's directory yet")
    return place, directory


def _place(directory: list[tuple[bytes, str | None]], public_key: bytes) -> int | None:
    return next((i for i, (pk, _) in enumerate(directory) if pk == public_key), None)


def run_node(
    config: NetworkConfig,
    participant: str,
    *,
    state_dir: Path,
    http_port: int,
    host: str = "127.0.0.1",
    ready_file: Path | None = None,
    api_keys: dict[str, int] | None = None,
    key_file: Path | None = None,
    address: str | None = None,
    peer_listen_host: str | None = None,
    num_cpus: int = 4,
    join_peers: list[str] | None = None,
    peer_address: str | None = None,
    echo: Any = print,
) -> None:
    """Run ``participant`` of ``config`` in this process's own Ray cluster until a signal, with
    its secret key from ``key_file`` (None: its demo key, only when the config names no public
    key for it). ``address``: join that running Ray cluster (the participant's own, e.g. a
    ``ray up`` head: ``"auto"``) instead of starting one here. ``peer_listen_host``: where its
    peer endpoint binds (``0.0.0.0`` behind a NAT; default: its ``peer_address``'s host).

    ``join_peers``: ``participant`` is not in ``config``'s genesis: it joins the running network
    through these peers (:func:`register_with_peers`) with the key in ``key_file`` (created
    there when missing), its peer endpoint at ``peer_address`` (default: a free loopback
    port), then syncs the ledger, runs Proof of Compute in the next epoch and serves.

    Raises:
        ConfigError: no such participant, no ``peer_address``, or a missing or wrong key.
        JoinRefused: the network would not register it.
    """
    from gonka_ray.config import ParticipantConfig
    from gonka_ray.network import Joiner, init_local_ray, launch, own_key, wait_ready
    from gonka_ray.serve.deployment import serve_network, shutdown

    joiner = None
    mine = next((p for p in config.participants if p.name == participant), None)
    if join_peers:
        if mine is not None:
            raise ConfigError(f"{participant!r} is a genesis participant: run it with `node`")
        if key_file is None:
            raise ConfigError("a joining participant needs --key (created when missing)")
        key = load_or_create_key(key_file)
        mine = ParticipantConfig(
            name=participant,
            weight=0,
            public_key=key.public_key.hex(),
            peer_address=peer_address or loopback_addresses(1)[0],
        )
        echo(f"{participant}: registering {key.address} through {', '.join(join_peers)} ...")
        index, directory = asyncio.run(
            register_with_peers(config, key, participant, mine.peer_address, join_peers)
        )
        joiner = Joiner(mine, index, tuple(directory))
        keys = {participant: key}
        echo(f"{participant}: registered, place {index} in the peer directory")
    else:
        if mine is None:
            raise ConfigError(f"no participant {participant!r} in network {config.name!r}")
        if mine.peer_address is None:
            raise ConfigError(f"participant {participant!r} needs a peer_address to run as a node")
        keys = {participant: crypto.KeyPair.load(key_file)} if key_file is not None else {}
        own_key(config, participant, keys)  # a missing or wrong key fails here, before Ray
    if address:
        from gonka_ray.sdk import init_ray

        init_ray(address, None, loopback=False)
    else:
        init_local_ray(
            num_cpus=num_cpus, address="local", object_store_memory=FEDERATION_OBJECT_STORE_BYTES
        )
    import ray

    stop_on_signals()
    net = None
    try:
        net = launch(
            config,
            storage_dir=state_dir,
            only=(participant,),
            keys=keys,
            peer_listen_host=peer_listen_host,
            joiner=joiner,
        )
        asyncio.run(wait_ready(net))
        url = serve_network(
            net,
            api_keys=api_keys or {},
            port=http_port,
            host=host,
            participants=(participant,),
            name=f"gonka-{config.name}-{participant}",
        )
        info = NodeInfo(
            participant=participant,
            pid=os.getpid(),
            gcs_address=ray.get_runtime_context().gcs_address,
            peer_address=mine.peer_address,
            url=url,
        )
        if ready_file is not None:
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(info)))
            tmp.replace(ready_file)  # readers never see half a file
        echo(f"{participant}: serving {url}v1, peer endpoint {mine.peer_address}")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        echo(f"{participant}: stopping ...")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            shutdown()
        except Exception:  # serve never started
            pass
        if net is not None:
            net.stop()
        if not address:
            ray.shutdown()


def stop_on_signals(*signums: signal.Signals) -> None:
    """From now on each of ``signums`` (default SIGTERM and SIGINT) stops this process like
    Ctrl-C: a ``KeyboardInterrupt`` whose message names the signal, so that the ``finally`` of
    what runs drains and stops it. Install it after ``ray.init``, whose own handlers it
    replaces (Ray's SIGTERM handler aborts the process)."""
    for signum in signums or (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


class LocalFederation:
    """One ``gonka-ray node`` process per participant of ``config`` (see the module docstring).

    Args:
        config: the network (its participants' ``peer_address`` are filled in if missing).
        root: a directory for the shared config, each node's state, key, log and ready file.
        api_keys: API key -> client index (funded by the demo genesis), served by every node.
        own_keys: each participant gets a fresh key of its own (its file only in its node's
            directory, its public key in the shared config), as strangers' nodes would; False
            keeps the demo keys the config's seed derives.
        http_ports: each node's HTTP port (default: free loopback ports).
    """

    def __init__(
        self,
        config: NetworkConfig,
        root: Path,
        *,
        api_keys: dict[str, int] | None = None,
        own_keys: bool = True,
        http_ports: dict[str, int] | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.key_files: dict[str, Path] = {}
        if own_keys:
            participants = []
            for p in config.participants:
                path = self.root / p.name / "participant.key"
                if path.exists():  # a restarted federation: each keeps its key (and ledger)
                    key = crypto.KeyPair.load(path)
                else:
                    key = crypto.KeyPair.generate()
                    key.save(path)
                self.key_files[p.name] = path
                participants.append(p.model_copy(update={"public_key": key.public_key.hex()}))
            config = config.model_copy(update={"participants": participants})
        self.config = with_peer_addresses(config)
        self.api_keys = dict(api_keys or {})
        self.procs: dict[str, subprocess.Popen] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self.joiners: dict[str, str] = {}  # joined after the genesis: name -> its peer address
        self.config_path = self.root / "network.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config.model_dump(mode="json")))
        ports = loopback_addresses(len(self.config.participants))
        self.http_ports = http_ports or {
            p.name: int(a.rsplit(":", 1)[1])
            for p, a in zip(self.config.participants, ports, strict=True)
        }

    def start(self, names: list[str] | None = None) -> None:
        """Start the nodes of ``names`` (default: every participant), without waiting."""
        for name in names or [p.name for p in self.config.participants]:
            if name in self.joiners:  # a restarted joiner joins again (it keeps its place)
                self.join(name)
                continue
            key = ["--key", str(self.key_files[name])] if name in self.key_files else []
            self._spawn(name, "node", key)

    def join(self, name: str) -> None:
        """Start a participant that is not in the genesis: ``gonka-ray join`` through the
        genesis participants' peer endpoints, with a fresh key of its own (kept across
        restarts), without waiting (:meth:`wait_ready` waits for it too)."""
        if any(p.name == name for p in self.config.participants):
            raise ConfigError(f"{name!r} is a genesis participant")
        if name not in self.joiners:
            address, port = loopback_addresses(2)
            self.joiners[name] = address
            self.http_ports[name] = int(port.rsplit(":", 1)[1])
        peers = ",".join(p.peer_address or "" for p in self.config.participants)
        self._spawn(
            name,
            "join",
            [
                "--peers",
                peers,
                "--key",
                str(self.root / name / "participant.key"),
                "--peer-address",
                self.joiners[name],
            ],
        )

    def _spawn(self, name: str, command: str, extra: list[str]) -> None:
        self.nodes.pop(name, None)  # a restart: wait for its new ready file
        node_dir = self.root / name
        node_dir.mkdir(exist_ok=True)
        ready = node_dir / "ready.json"
        ready.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "gonka_ray.cli",
            command,
            str(self.config_path),
            "--participant",
            name,
            "--state",
            str(node_dir / "state"),
            "--port",
            str(self.http_ports[name]),
            "--ready-file",
            str(ready),
            *[a for k, i in self.api_keys.items() for a in ("--api-key", f"{k}={i}")],
            *extra,
        ]
        log = open(node_dir / "node.log", "ab")  # noqa: SIM115  (the child owns it)
        self.procs[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def wait_ready(self, timeout_s: float = FEDERATION_NODE_START_TIMEOUT_S) -> dict[str, NodeInfo]:
        """Wait for every started node's ready file.

        Raises:
            RuntimeError: a node exited first (its log's tail in the message).
            TimeoutError: not all ready within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            for name, proc in self.procs.items():
                ready = self.root / name / "ready.json"
                if name not in self.nodes and ready.exists():
                    self.nodes[name] = NodeInfo.read(ready)
                if proc.poll() is not None:
                    tail = (self.root / name / "node.log").read_text()[-3000:]
                    raise RuntimeError(f"node {name} exited with {proc.returncode}:\n{tail}")
            if len(self.nodes) == len(self.procs):
                return dict(self.nodes)
            if time.monotonic() > deadline:
                waiting = sorted(set(self.procs) - set(self.nodes))
                raise TimeoutError(f"nodes not ready in {timeout_s:.0f} s: {waiting}")
            time.sleep(0.2)

    def stop(self, names: list[str] | None = None) -> dict[str, int | None]:
        """SIGTERM the nodes (graceful stop), SIGKILL any still running after the grace
        period; returns each one's exit code."""
        names = names or list(self.procs)
        for name in names:
            if self.procs[name].poll() is None:
                self.procs[name].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + FEDERATION_NODE_STOP_GRACE_S
        codes: dict[str, int | None] = {}
        for name in names:
            proc = self.procs[name]
            try:
                codes[name] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = proc.wait()
            self.nodes.pop(name, None)
        return codes

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
