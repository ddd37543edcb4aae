"""Launch a whole network from a :class:`~gonka_ray.config.NetworkConfig` on a running Ray.

:func:`launch` creates, per participant, an MLNode, a ledger replica, an executor, a transport
agent and a verifier as named actors (``<network>.<participant>.<role>``) in one namespace, with
keys derived from the config's seed (demo keys; a real operator brings its own key file), a
genesis that registers every participant with its weight and funds a demo client account, and
the verifiers' seed commitments. :meth:`Network.teardown` kills every actor it created and is
idempotent. Placement: when a participant lists ``resources`` (e.g. ``participant:alice: 1`` on a
``ray up`` cluster), all its actors require them, so a participant's roles stay on its nodes.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gonka_ray import crypto, wire
from gonka_ray.actors.epoch_worker import PocSettings
from gonka_ray.actors.mlnode import MLNode, mlnode_options
from gonka_ray.actors.participant import ExecutorActor, TransportAgentActor, VerifierEpochActor
from gonka_ray.actors.replica import ParticipantReplica, ledger_transport
from gonka_ray.actors.spec import ParticipantSpec
from gonka_ray.adversary.actors import CheatingMLNode
from gonka_ray.adversary.cheats import MODEL_CHEATS
from gonka_ray.config import NetworkConfig, ParticipantConfig
from gonka_ray.constants import NETWORK_STOP_DRAIN_TIMEOUT_S, env
from gonka_ray.exceptions import CommitTimeout, ConfigError
from gonka_ray.peer.tcp import loopback_addresses
from gonka_ray.protocol.verification_policy import epoch_rule_for
from gonka_ray.raykit import ActorOptions, keep_ray_on_loopback, remote
from gonka_ray.serve.body_limit import PROXY_CALLBACK, PROXY_CALLBACK_ENV

ROLES = ("mlnode", "ledger", "executor", "ta", "verifier")

log = logging.getLogger(__name__)


def participant_key(config: NetworkConfig, name: str) -> crypto.KeyPair:
    """The demo key of participant ``name`` (derived from the config's name and seed)."""
    return crypto.KeyPair.from_seed(f"{config.name}/{config.seed}/participant/{name}")


def public_key_of(config: NetworkConfig, name: str) -> bytes:
    """Participant ``name``'s public key: the configured one, else its demo key's."""
    p = next(p for p in config.participants if p.name == name)
    if p.public_key is not None:
        return bytes.fromhex(p.public_key)
    return participant_key(config, name).public_key


def own_key(
    config: NetworkConfig, name: str, keys: Mapping[str, crypto.KeyPair] | None = None
) -> crypto.KeyPair:
    """The key participant ``name`` runs with: ``keys[name]`` (it must match the configured
    public key), else its demo key (only when the config names no public key for it).

    Raises:
        ConfigError: no key given for a participant whose config names its public key, or
            a given key that is not that key.
    """
    key = (keys or {}).get(name)
    configured = next(p for p in config.participants if p.name == name).public_key
    if key is None:
        if configured is not None:
            raise ConfigError(f"participant {name!r} names its public key: give its key file")
        return participant_key(config, name)
    if configured is not None and key.public_key.hex() != configured:
        raise ConfigError(f"the key given for {name!r} is not its configured public key")
    return key


def client_key(config: NetworkConfig, index: int = 0) -> crypto.KeyPair:
    """A demo client key funded in the genesis."""
    return crypto.KeyPair.from_seed(f"{config.name}/{config.seed}/client/{index}")


def chain_id(config: NetworkConfig, clients: int = 1) -> str:
    """The network's genesis chain id, which every signature binds: its name and the first 8
    bytes of the digest of its genesis (as named by the bare name). Two networks that share a
    name but not a genesis (participants, balances, rule parameters) sign for different chains,
    so nothing signed on one, a client's request included, is valid on the other."""
    digest = wire.digest(_genesis(config, clients, config.name))
    return f"{config.name}-{digest[:8].hex()}"


def build_genesis(config: NetworkConfig, clients: int = 1) -> wire.LedgerGenesis:
    return _genesis(config, clients, chain_id(config, clients))


def _genesis(config: NetworkConfig, clients: int, chain: str) -> wire.LedgerGenesis:
    return wire.LedgerGenesis(
        chain_id=chain,
        accounts=tuple(
            wire.GenesisAccount(
                client_key(config, i).address, config.pricing.genesis_client_balance
            )
            for i in range(clients)
        ),
        participants=tuple(
            wire.GenesisParticipant(public_key_of(config, p.name), p.name, p.weight)
            for p in config.participants
        ),
        epoch_evidence=evidence_spec(config.model.name, network_precision(config)),
        params=ledger_params(config),
    )


def ledger_params(config: NetworkConfig) -> wire.LedgerParams:
    """The rule parameters every replica takes from the genesis (not from its own config)."""
    e = config.epoch
    return wire.LedgerParams(
        price_per_token=config.pricing.price_per_token,
        expiry_blocks=config.ledger.expiry_blocks,
        vote_blocks=max(20, config.ledger.expiry_blocks // 10),  # a tenth of the expiry window
        epoch_blocks=e.epoch_blocks,
        poc_sprint_blocks=e.poc_sprint_blocks,
        poc_validation_blocks=e.poc_validation_blocks,
        epochs_to_max_reputation=e.epochs_to_max_reputation,
        reward_per_epoch=e.reward_per_epoch,
        weight_cap_share=float(e.weight_cap_share),
        poc_difficulty=float(e.poc_difficulty),
        poc_calibration_nonces=e.poc_calibration_nonces,
    )


def network_precision(config: NetworkConfig) -> str:
    """The dtype verifiers judge by: the least precise engine in the network (an honest bf16
    executor's logprobs deviate far beyond the float32 bound)."""
    dtypes = {config.engine_for(p.name).dtype for p in config.participants}
    return "float32" if dtypes == {"float32"} else "bfloat16"


def evidence_spec(model: str, dtype: str) -> wire.EvidenceRuleSpec | None:
    """The calibrated epoch-evidence rule of ``model`` in ``dtype`` for a genesis (None when
    the model has none)."""
    rule = epoch_rule_for(model, dtype)
    if rule is None:
        return None
    return wire.EvidenceRuleSpec(
        rule.mu, rule.kappa, rule.z, rule.safety, rule.min_inferences, rule.trim, rule.sigma
    )


@dataclass
class Network:
    """Handles to a launched network."""

    config: NetworkConfig
    namespace: str
    storage_dir: Path
    specs: dict[str, ParticipantSpec]
    handles: dict[tuple[str, str], Any] = field(default_factory=dict)
    owns_storage: bool = False
    local: tuple[str, ...] = ()  # the participants whose actors run on this Ray (all if empty)

    @property
    def here(self) -> list[str]:
        """The participants launched on this Ray (a node runs one; a local network all)."""
        return list(self.local or self.specs)

    def handle(self, participant: str, role: str) -> Any:
        return self.handles[(participant, role)]

    def ta(self, participant: str | None = None) -> Any:
        return self.handle(participant or self.here[0], "ta")

    def client_key(self, index: int = 0) -> crypto.KeyPair:
        return client_key(self.config, index)

    @property
    def chain_id(self) -> str:
        """The genesis chain id: clients sign requests for it."""
        return next(iter(self.specs.values())).chain.id

    def address_of(self, participant: str) -> str:
        return crypto.address(public_key_of(self.config, participant))

    def name_of(self, address: str) -> str:
        return next(n for n in self.specs if self.address_of(n) == address)

    async def participants(self) -> dict:
        """Participant infos from the first local participant's replica (committed state)."""
        return await self.handle(self.here[0], "ledger").participants.remote()

    async def stats(self) -> dict[str, dict]:
        out = {}
        for name in self.here:
            out[name] = {
                role: await self.handle(name, role).stats.remote()
                for role in ("ta", "executor", "verifier")
            }
        return out

    def stop(self, *, drain_timeout_s: float = NETWORK_STOP_DRAIN_TIMEOUT_S) -> dict[str, int]:
        """Stop gracefully, then :meth:`teardown`: transport agents and executors finish the
        ledger submissions of work already answered, then every ledger replica stops ticking
        and closes its store (flushed to disk). Each step waits at most ``drain_timeout_s``.

        Returns:
            how many actors finished each step in time: ``drained`` (TAs and executors) and
            ``flushed`` (ledger replicas).
        """
        import ray

        def step(role_names: tuple[str, ...], method: str) -> int:
            refs = [
                getattr(h, method).remote()
                for (_, role), h in self.handles.items()
                if role in role_names
            ]
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=drain_timeout_s)
            ok = 0
            for ref in done:
                try:
                    ray.get(ref)
                    ok += 1
                except Exception as exc:  # a dead actor: nothing left to drain there
                    log.warning("graceful stop: %s failed: %r", method, exc)
            return ok

        result = {
            "drained": step(("ta", "executor"), "drain"),
            "flushed": step(("ledger",), "close"),
        }
        self.teardown()
        return result

    def teardown(self) -> None:
        """Kill every actor of this network (idempotent) and remove its temporary storage."""
        import ray

        for handle in list(self.handles.values()):
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # already dead
                pass
        self.handles.clear()
        if self.owns_storage:
            shutil.rmtree(self.storage_dir, ignore_errors=True)


@dataclass(frozen=True)
class Joiner:
    """A participant that joined after the genesis (see :mod:`gonka_ray.federation`): its
    config (with its public key and peer address), the place its registration got in the peer
    directory, and the directory as it learned it (``[(public_key, endpoint), ...]`` by place,
    at least up to its own)."""

    participant: ParticipantConfig
    index: int
    directory: tuple[tuple[bytes, str | None], ...]


def launch(
    config: NetworkConfig,
    *,
    namespace: str | None = None,
    storage_dir: str | Path | None = None,
    clients: int = 1,
    only: tuple[str, ...] = (),
    keys: Mapping[str, crypto.KeyPair] | None = None,
    peer_listen_host: str | None = None,
    joiner: Joiner | None = None,
) -> Network:
    """Start ``config``'s network on the current Ray (``ray.init`` first) and return handles.

    ``only``: launch just these participants' actors (a node of a federation: the others run
    in their own Ray clusters and are reached over the peer transport, at the ``peer_address``
    each names in ``config``). ``keys``: the secret keys of participants launched here whose
    config names a public key (see :func:`own_key`); the others' specs carry no secret.
    ``peer_listen_host``: bind the peer endpoints there (e.g. ``0.0.0.0`` behind a NAT) instead
    of the host of their ``peer_address`` (which peers dial). ``joiner``: launch only this
    participant, registered after the genesis (its key in ``keys``); the genesis is still
    ``config``'s.

    Raises:
        ConfigError: ``only`` names an unknown participant, one of a federation's
            participants has no ``peer_address``, or a key is missing or wrong.
    """
    genesis = build_genesis(config, clients)  # NOTE: before a joiner is added to the config
    if joiner is not None:
        if any(p.name == joiner.participant.name for p in config.participants):
            raise ConfigError(f"{joiner.participant.name!r} is a genesis participant")
        config = config.model_copy(
            update={"participants": [*config.participants, joiner.participant]}
        )
        only = (joiner.participant.name,)
    unknown = set(only) - {p.name for p in config.participants}
    if unknown:
        raise ConfigError(f"no participant {sorted(unknown)} in network {config.name!r}")
    if only and any(p.peer_address is None for p in config.participants):
        raise ConfigError("a node needs every participant's peer_address in the config")
    namespace = namespace or env("GONKA_NAMESPACE")
    owns = storage_dir is None and not config.ledger.storage_dir  # a temp dir of our own
    storage = Path(storage_dir or config.ledger.storage_dir or tempfile.mkdtemp(prefix="gonka_"))
    genesis_bytes = wire.encode(genesis)
    launched = set(only or [p.name for p in config.participants])
    seeds = {n: own_key(config, n, keys).seed for n in launched}
    precision = network_precision(config)
    n_genesis = len(genesis.participants)
    free = iter(loopback_addresses(n_genesis))
    peer_addresses = tuple(p.peer_address or next(free) for p in config.participants[:n_genesis])
    peer_keys: tuple[bytes, ...] = ()
    if joiner is not None:  # the directory as the joiner learned it, the config's as fallback
        peer_keys = tuple(pk for pk, _ in joiner.directory)
        peer_addresses = tuple(
            ep or (peer_addresses[i] if i < n_genesis else None)
            for i, (_, ep) in enumerate(joiner.directory)
        )
    places = {p.name: i for i, p in enumerate(config.participants[:n_genesis])}
    if joiner is not None:
        places[joiner.participant.name] = joiner.index
    specs = {
        p.name: ParticipantSpec(
            network=config.name,
            namespace=namespace,
            name=p.name,
            index=places[p.name],
            key_seed=seeds.get(p.name, b""),  # NOTE: no secret of a participant not run here
            genesis=genesis_bytes,
            model=config.model.name,
            dtype=precision,
            storage_dir=str(storage),
            adversary=p.adversary,
            poc=PocSettings(max_budget_s=config.epoch.poc_budget_s, max_nonces=p.poc_max_nonces),
            peer_addresses=peer_addresses,
            peer_keys=peer_keys,
            peer_listen_host=peer_listen_host,
        )
        for p in config.participants
    }
    net = Network(config, namespace, storage, specs, owns_storage=owns, local=tuple(only))
    here = [p for p in config.participants if p.name in net.here]
    try:
        for p in here:
            spec = specs[p.name]
            engine_cfg = config.engine_for(p.name)
            opts = mlnode_options(
                engine_cfg,
                name=spec.actor_name("mlnode"),
                namespace=namespace,
                resources=p.resources,
            )
            if p.adversary in MODEL_CHEATS:
                node = remote(CheatingMLNode, opts).remote(config.model, engine_cfg, p.adversary)
            else:
                node = remote(MLNode, opts).remote(config.model, engine_cfg)
            net.handles[(p.name, "mlnode")] = node
            tick_ms = max(5, config.ledger.block_interval_ms)
            net.handles[(p.name, "ledger")] = remote(
                ParticipantReplica, _role_options(spec, "ledger", p.resources, restarts=-1)
            ).remote(
                spec,
                transport=ledger_transport(spec),
                tick_ms=tick_ms,
                timeout_ticks=max(10, config.ledger.view_timeout_ms // tick_ms),
                empty_block_interval_ms=config.ledger.empty_block_interval_ms,
                min_block_interval_ms=config.ledger.min_block_interval_ms,
                epoch_blocks=spec.epoch_app_config.epoch.epoch_blocks,  # the genesis's
                on_corrupt_store=config.ledger.on_corrupt_store,
            )
        for p in here:
            net.handles[(p.name, "ledger")].start.remote()
        for p in here:
            spec = specs[p.name]
            for role, cls in (
                ("executor", ExecutorActor),
                ("ta", TransportAgentActor),
                ("verifier", VerifierEpochActor),
            ):
                net.handles[(p.name, role)] = remote(
                    cls, _role_options(spec, role, p.resources)
                ).remote(spec)
        return net
    except Exception:
        net.teardown()
        raise


async def wait_ready(net: Network, timeout_s: float = 600.0) -> None:
    """Wait until every MLNode answers and every verifier has committed its seed.

    A seed that does not commit in time (``CommitTimeout``: a replica still syncing, as a
    participant that just joined is, or a leader change under load) is asked for again, until
    ``timeout_s``; any other error is raised."""

    async def _started(name: str) -> None:
        while True:
            try:
                await net.handle(name, "verifier").start.remote()
                return
            except CommitTimeout as exc:  # Ray's wrapper subclasses the cause
                log.info("%s: seeds not committed yet (%s); asking again", name, exc)
                await asyncio.sleep(1.0)

    async def _all():
        await asyncio.gather(*[net.handle(n, "mlnode").model_info.remote() for n in net.here])
        await asyncio.gather(*[_started(n) for n in net.here])
        await asyncio.gather(*[net.handle(n, "ta").ping.remote() for n in net.here])

    await asyncio.wait_for(_all(), timeout_s)


def _role_options(
    spec: ParticipantSpec, role: str, resources: dict[str, float], restarts: int = 2
) -> ActorOptions:
    return ActorOptions(
        name=spec.actor_name(role),
        namespace=spec.namespace,
        max_restarts=restarts,
        max_task_retries=0,
        max_concurrency=1000,
        num_cpus=0,
        resources=dict(resources),
    )


def init_local_ray(num_cpus: int = 8, **kwargs: Any) -> None:
    """Start (or join) a Ray instance bound to loopback, without the dashboard.

    The loopback variables are set (if unset) first: :func:`keep_ray_on_loopback`.
    """
    import os

    keep_ray_on_loopback()
    # Serve's proxy (a Ray worker started below) installs the body limit only from its env
    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
    import ray

    if not ray.is_initialized():
        options = {"include_dashboard": False, "num_cpus": num_cpus, "log_to_driver": False}
        ray.init(_node_ip_address="127.0.0.1", **options, **kwargs)
