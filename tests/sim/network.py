"""Seeded in-memory network of consensus replicas, with faults and byzantine replicas.

``SimNetwork(seed)`` (a test harness, kept out of the package) runs n
:class:`~gonka_ray.ledger.consensus.ConsensusCore` replicas in one process on a discrete clock. Every message goes through the real codec (bytes in, bytes out).
Per-link faults: drop, delay (which also reorders), duplicate, and partitions that can be healed.
Byzantine replicas (at most f identities) run one of the modes of :mod:`tests.sim.byzantine`
(``silent``, ``equivocate``, ``forge``, ``replay``, ``equivocating_leader``, ``double_vote``,
``lock_attack``, ``twins``, ``replay_old_views``), all driven by one colluding
:class:`~tests.sim.byzantine.Adversary` (``net.adversary``; its ``counts`` say what it did).

Locations: replica ``i`` sits at location ``i``; a ``twins`` replica's twin (same key, same
index, its own core) at location ``n + k`` for the k-th twin. A message for replica ``i`` goes to
every location of ``i``; partitions are groups of locations. Both twins are byzantine: the
checks cover the other replicas.

Honest replicas apply committed blocks to a :class:`~gonka_ray.ledger.state.StateMachine`; the
checks are the BFT properties: no two honest replicas commit different blocks at a height,
their state hashes match at every height, and after the heal every honest replica commits
every submitted transaction. Everything derives from ``seed``: ``run_scenario(seed)`` replays.

Reconfiguration: with ``epoch_blocks`` set, ``reconfigure = {height: {replica: power}}`` makes an
end-block hook write those powers into the ``validator`` table at ``height`` (power 0 removes
the replica); consensus switches sets at the next epoch boundary. Honest replicas start each
epoch from their own committed state; byzantine ones are handed the set once an honest replica
has it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from gonka_ray import crypto, wire
from gonka_ray.ledger import merkle
from gonka_ray.ledger.consensus import ConsensusCore, SafetyViolation
from gonka_ray.ledger.quorum import Validator, ValidatorSet, block_hash
from gonka_ray.ledger.ready import Ready
from gonka_ray.ledger.state import VALIDATORS, StateMachine, TxContext
from gonka_ray.wire import Block, GenesisAccount, GenesisParticipant, LedgerGenesis, Transfer
from tests.sim.byzantine import ATTACK_MODES, BYZANTINE_MODES, Adversary

REPLAY_HINT = ".venv/bin/python benchmarks/ledger_sim.py --replay {seed} --n {n}"
SIM_CHAIN = "sim"  # the simulated network's chain id


@lru_cache(maxsize=64)
def sim_key(name: str) -> crypto.KeyPair:
    return crypto.KeyPair.from_seed(f"gonka_ray/sim/{name}")


def make_genesis(
    n: int, *, powers: list[int] | None = None, clients: int = 4, balance: int = 1_000
) -> LedgerGenesis:
    """A genesis with ``n`` validators ``replica-i`` and ``clients`` funded ``client-k``."""
    powers = powers or [1] * n
    return LedgerGenesis(
        chain_id=SIM_CHAIN,
        accounts=tuple(
            GenesisAccount(address=sim_key(f"client-{k}").address, balance=balance)
            for k in range(clients)
        ),
        participants=tuple(
            GenesisParticipant(
                public_key=sim_key(f"replica-{i}").public_key, name=f"replica-{i}", weight=powers[i]
            )
            for i in range(n)
        ),
    )


def validator_set(genesis: LedgerGenesis) -> ValidatorSet:
    return ValidatorSet([Validator(p.public_key, p.weight) for p in genesis.participants])


@dataclass
class Node:
    index: int  # identity: the replica's genesis (transport) index
    core: ConsensusCore | None
    sm: StateMachine
    byzantine: str | None = None
    location: int = -1  # where it sits in the network (``index``, or ``n + k`` for a twin)
    commits: list[bytes] = field(default_factory=list)  # block hash by height - 1
    state_hashes: list[bytes] = field(default_factory=list)
    committed_txs: set[bytes] = field(default_factory=set)
    heard: list[bytes] = field(default_factory=list)  # replay mode: messages received
    stored: dict[bytes, Block] = field(default_factory=dict)  # its store: every block persisted


class SimNetwork:
    """A seeded simulated network. See the module docstring."""

    def __init__(
        self,
        seed: int,
        *,
        n: int = 4,
        powers: list[int] | None = None,
        byzantine: dict[int, str] | None = None,
        drop: float = 0.0,
        duplicate: float = 0.0,
        max_delay: int = 1,
        timeout_ticks: int = 8,
        max_block_txs: int = 64,
        empty_block_ticks: int = 0,
        min_block_ticks: int = 0,
        epoch_blocks: int = 0,
        reconfigure: dict[int, dict[int, int]] | None = None,
    ) -> None:
        self.seed = seed
        self.epoch_sets: dict[int, ValidatorSet] = {}
        self.rng = random.Random(seed)
        self.n = n
        self.drop = drop
        self.duplicate = duplicate
        self.max_delay = max_delay
        self.partition: list[set[int]] | None = None
        self.now = 0
        self._seq = 0
        self.queue: list[tuple[int, int, int, int, bytes]] = []
        self.genesis = make_genesis(n, powers=powers)
        self.vs = validator_set(self.genesis)
        digest = wire.digest(self.genesis)
        self.nodes: list[Node] = []  # by identity
        self.twins: list[Node] = []  # the second node of each ``twins`` identity
        byzantine = byzantine or {}
        if any(i >= n or mode not in BYZANTINE_MODES for i, mode in byzantine.items()):
            raise ValueError(f"bad byzantine replicas {byzantine}; modes: {BYZANTINE_MODES}")

        def make_core(i: int, core_seed: int, stored: dict[bytes, Block]) -> ConsensusCore:
            return ConsensusCore(
                self.vs,
                sim_key(f"replica-{i}"),
                digest,
                timeout_ticks=timeout_ticks,
                max_block_txs=max_block_txs,
                seed=core_seed,
                empty_block_ticks=empty_block_ticks,
                min_block_ticks=min_block_ticks,
                epoch_blocks=epoch_blocks,
                block_source=stored.get,  # as a replica serves old blocks from its store
            )

        def make_sm() -> StateMachine:
            sm = StateMachine(self.genesis, epoch_blocks=epoch_blocks)
            if reconfigure:
                sm.on_end_block(_reconfigure_hook(reconfigure))
            return sm

        for i in range(n):
            mode = byzantine.get(i)
            stored: dict[bytes, Block] = {}
            core = None if mode == "silent" else make_core(i, seed * 1000 + i, stored)
            self.nodes.append(Node(i, core, make_sm(), mode, location=i, stored=stored))
        for i in sorted(byzantine):
            if byzantine[i] == "twins":
                stored = {}
                twin = make_core(i, seed * 1000 + 500 + i, stored)
                loc = n + len(self.twins)
                self.twins.append(Node(i, twin, make_sm(), "twins", location=loc, stored=stored))
        self.located = self.nodes + self.twins  # by location
        self.where: dict[int, list[int]] = {i: [i] for i in range(n)}  # identity -> locations
        for tw in self.twins:
            self.where[tw.index].append(tw.location)
        self.honest = [nd for nd in self.nodes if nd.byzantine is None]
        self.messages_sent = 0
        self.adversary = Adversary(self)

    # --- network ---------------------------------------------------------------------------

    def _cut(self, src: int, dst: int) -> bool:
        if self.partition is None:
            return False
        return not any(src in g and dst in g for g in self.partition)

    def send(self, location: int, dest: int | None, data: bytes) -> None:
        """Send ``data`` from the node at ``location`` to replica ``dest`` (every location of
        it; ``None``: every other replica), through the link faults."""
        src = self.located[location].index
        dests = [d for d in range(self.n) if d != src] if dest is None else [dest]
        for d in dests:
            if d == src:
                continue
            for loc in self.where[d]:
                copies = 2 if self.rng.random() < self.duplicate else 1
                for _ in range(copies):
                    if self.rng.random() < self.drop or self._cut(location, loc):
                        continue
                    self._seq += 1
                    when = self.now + self.rng.randint(1, self.max_delay)
                    heapq.heappush(self.queue, (when, self._seq, loc, src, data))
                    self.messages_sent += 1

    def set_partition(self, groups: list[set[int]] | None) -> None:
        """Cut every link between different groups of locations (``None`` heals). In-flight
        messages already queued still arrive."""
        self.partition = groups

    # --- replicas --------------------------------------------------------------------------

    def _carry_out(self, node: Node, ready: Ready) -> None:
        for b in ready.to_persist:
            if isinstance(b, Block):
                node.stored[block_hash(b.header)] = b
        outbound = ready.outbound
        if node.byzantine is not None:
            outbound = self.adversary.outbound(node, ready)
        for dest, data in outbound:
            self.send(node.location, dest, data)
        if node.byzantine is None:
            for c in ready.committed:
                height = c.block.header.height
                if height != len(node.commits) + 1:
                    raise SafetyViolation(f"replica {node.index} skipped to height {height}")
                res = node.sm.apply_block(height, c.hash, c.block.txs)
                node.commits.append(c.hash)
                node.state_hashes.append(res.state_hash)
                node.committed_txs.update(r.tx_hash for r in res.receipts)
                core = node.core
                if core is not None and core.ended and height == core.epoch_end_height:
                    members = node.sm.validator_set(core.epoch + 1)
                    assert members is not None
                    vs = ValidatorSet([Validator(k, w) for k, w in members])
                    self.epoch_sets.setdefault(core.epoch + 1, vs)
                    self._carry_out(node, core.start_epoch(core.epoch + 1, vs))
        elif node.core is not None and node.core.ended:
            self._start_byzantine_epoch(node)

    def _start_byzantine_epoch(self, node: Node) -> None:
        core = node.core
        assert core is not None
        vs = self.epoch_sets.get(core.epoch + 1)
        if vs is not None:
            self._carry_out(node, core.start_epoch(core.epoch + 1, vs))

    def submit(self, index: int, tx: bytes) -> None:
        node = self.nodes[index]
        if node.core is not None:
            self._carry_out(node, node.core.submit(tx))

    def run(self, ticks: int) -> None:
        adversary = self.adversary
        for _ in range(ticks):
            self.now += 1
            while self.queue and self.queue[0][0] <= self.now:
                _, _, dst, src, data = heapq.heappop(self.queue)
                node = self.located[dst]
                if node.core is None:
                    continue
                if node.byzantine is None:
                    if self.nodes[src].byzantine is not None:
                        adversary.witness(node, src, data)
                    self._carry_out(node, node.core.step(data, src))
                else:
                    msg = adversary.received(node, data)
                    ready = node.core.step(msg, src)
                    adversary.after_step(node, msg, data)
                    self._carry_out(node, ready)
            for node in self.located:
                if node.core is not None:
                    if node.byzantine is not None and node.core.ended:
                        self._start_byzantine_epoch(node)
                    self._carry_out(node, node.core.tick())
                    if node.byzantine is not None:
                        adversary.act(node)

    def run_until(self, predicate: Any, max_ticks: int) -> bool:
        for _ in range(max_ticks):
            if predicate():
                return True
            self.run(1)
        return bool(predicate())

    # --- properties ------------------------------------------------------------------------

    def safety_violations(self) -> list[str]:
        """Heights at which honest replicas committed different blocks or reached different
        state hashes."""
        problems = []
        longest = max((len(nd.commits) for nd in self.honest), default=0)
        for h in range(longest):
            blocks = {nd.commits[h] for nd in self.honest if len(nd.commits) > h}
            states = {nd.state_hashes[h] for nd in self.honest if len(nd.state_hashes) > h}
            if len(blocks) > 1:
                problems.append(f"height {h + 1}: {len(blocks)} different blocks committed")
            if len(states) > 1:
                problems.append(f"height {h + 1}: {len(states)} different state hashes")
        return problems

    def all_committed(self, tx_hashes: set[bytes]) -> bool:
        return all(tx_hashes <= nd.committed_txs for nd in self.honest)


def _reconfigure_hook(plan: dict[int, dict[int, int]]) -> Any:
    def hook(ctx: TxContext) -> None:
        for i, power in sorted(plan.get(ctx.height, {}).items()):
            address = sim_key(f"replica-{i}").address
            if power > 0:
                ctx.put(VALIDATORS, address, power)
            else:
                ctx.delete(VALIDATORS, address)

    return hook


# --- scenarios --------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    seed: int
    safety: list[str]
    live: bool
    byzantine: dict[int, str]
    partitioned: bool
    heights: list[int]
    ticks: int
    messages: int
    error: str = ""
    n: int = 4
    empty_block_ticks: int = 0
    min_block_ticks: int = 0
    epoch_blocks: int = 0
    epochs: int = 0  # consensus epochs the honest replicas reached
    attacks: dict[str, int] = field(default_factory=dict)  # the adversary's counts

    @property
    def ok(self) -> bool:
        return not self.safety and self.live and not self.error

    def describe(self) -> str:
        return (
            f"seed={self.seed} byzantine={self.byzantine} partitioned={self.partitioned} "
            f"empty_block_ticks={self.empty_block_ticks} min_block_ticks={self.min_block_ticks} "
            f"epoch_blocks={self.epoch_blocks} "
            f"epochs={self.epochs} attacks={ {k: v for k, v in self.attacks.items() if v} } "
            f"heights={self.heights} ticks={self.ticks} safety={self.safety} live={self.live} "
            f"error={self.error!r}; replay with: {REPLAY_HINT.format(seed=self.seed, n=self.n)}"
        )


def reconfiguration_plan(
    rng: random.Random, n: int, byzantine: set[int], epoch_blocks: int
) -> dict[int, dict[int, int]]:
    """Two validator-set changes: new powers (honest 1–3, byzantine 1 or removed; with no
    byzantine replica, one honest replica removed), then everyone back at power 1. The byzantine
    share stays below 1/3 of power throughout."""
    first = rng.randint(1, 2 * epoch_blocks)
    second = first + rng.randint(epoch_blocks, 3 * epoch_blocks)
    change = {i: (rng.choice([0, 1]) if i in byzantine else rng.randint(1, 3)) for i in range(n)}
    if not byzantine:
        change[rng.randrange(n)] = 0
    return {first: change, second: dict.fromkeys(range(n), 1)}


def scenario_txs(rng: random.Random, count: int) -> list[bytes]:
    """Signed transfers between clients, plus some that must be rejected."""
    txs = []
    nonces = [0] * 4
    for _ in range(count):
        k = rng.randrange(4)
        key = sim_key(f"client-{k}")
        to = sim_key(f"client-{rng.randrange(4)}").address
        roll = rng.random()
        if roll < 0.08:  # overspend
            txs.append(wire.seal(Transfer(to=to, amount=10**6, nonce=nonces[k]), key, SIM_CHAIN))
        elif roll < 0.12:  # bad signature: flip a byte of the signature
            raw = bytearray(wire.seal(Transfer(to=to, amount=1, nonce=nonces[k]), key, SIM_CHAIN))
            raw[-1] ^= 1
            txs.append(bytes(raw))
        else:
            txs.append(
                wire.seal(
                    Transfer(to=to, amount=rng.randint(1, 20), nonce=nonces[k]), key, SIM_CHAIN
                )
            )
            nonces[k] += 1
    return txs


def collusion_plan(
    rng: random.Random, byzantine: dict[int, str], modes: Sequence[str]
) -> dict[int, str]:
    """With two or more byzantine replicas, half the time they follow one plan: all run the
    same attack, or (a third of those) one twinned identity plus lock attackers."""
    attacks = [m for m in ATTACK_MODES if m in modes]
    if len(byzantine) < 2 or not attacks or rng.random() >= 0.5:
        return byzantine
    ids = sorted(byzantine)
    if "twins" in attacks and "lock_attack" in attacks and rng.random() < 1 / 3:
        return {i: ("twins" if i == ids[0] else "lock_attack") for i in ids}
    mode = rng.choice(attacks)
    return dict.fromkeys(ids, mode)


def twin_partitions(
    rng: random.Random, net: SimNetwork, chaos_ticks: int
) -> dict[int, list[set[int]] | None]:
    """Partitions for a run with twins (Twins-style): one to three windows over the chaos
    ticks; in each, every twin pair is split and the other locations are dealt to the two
    sides at random (a window without partition now and then)."""
    starts = sorted(rng.sample(range(chaos_ticks - 5), rng.randint(1, 3)))
    plan: dict[int, list[set[int]] | None] = {}
    for t in starts:
        if rng.random() < 0.15:
            plan[t] = None
            continue
        a, b = set(), set()
        for tw in net.twins:
            a.add(tw.index)
            b.add(tw.location)
        for nd in net.nodes:
            if nd.index not in a:
                (a if rng.random() < 0.5 else b).add(nd.location)
        plan[t] = [a, b]
    return plan


def run_scenario(
    seed: int,
    *,
    n: int = 4,
    chaos_ticks: int = 60,
    heal_ticks: int = 600,
    modes: Sequence[str] = BYZANTINE_MODES,
) -> ScenarioResult:
    """One randomized run: faults and byzantine replicas during ``chaos_ticks``, then heal and
    check that every honest replica commits every submitted transaction. ``modes`` are the
    byzantine modes drawn from (``LEGACY_MODES`` replays seeds as they ran before the
    stronger adversary)."""
    rng = random.Random(seed)
    f = (n - 1) // 3
    byzantine: dict[int, str] = {}
    if rng.random() < 0.7:
        for i in rng.sample(range(n), f):
            byzantine[i] = rng.choice(modes)
    # Collusion and twin partitions come from a stream of their own, so that the other choices
    # of a seed do not depend on them.
    plot = random.Random(f"adversary/{seed}/plan")
    byzantine = collusion_plan(plot, byzantine, modes)
    max_delay = rng.randint(1, 4)
    # Heartbeat blocks in a third of the runs, from their own stream so that the other choices
    # of a seed do not depend on it.
    beat = random.Random(f"heartbeat/{seed}")
    empty_block_ticks = beat.randint(2, 3 * max_delay + 2) if beat.random() < 1 / 3 else 0
    # Validator-set changes at epoch boundaries in half of the runs (same separate stream).
    epoch_blocks, plan = 0, None
    if beat.random() < 0.5:
        epoch_blocks = beat.randint(4, 8)
        plan = reconfiguration_plan(beat, n, set(byzantine), epoch_blocks)
    # Block pacing in a third of the runs (a stream of its own again).
    pace = random.Random(f"pacing/{seed}")
    min_block_ticks = pace.randint(1, max_delay) if pace.random() < 1 / 3 else 0
    net = SimNetwork(
        seed,
        n=n,
        byzantine=byzantine,
        drop=rng.choice([0.0, 0.05, 0.15, 0.3]),
        duplicate=rng.choice([0.0, 0.05, 0.2]),
        max_delay=max_delay,
        timeout_ticks=2 * max_delay + 4,
        empty_block_ticks=empty_block_ticks,
        min_block_ticks=min_block_ticks,
        epoch_blocks=epoch_blocks,
        reconfigure=plan,
    )
    honest_idx = [nd.index for nd in net.honest]
    txs = scenario_txs(rng, rng.randint(5, 25))
    schedule = sorted((rng.randrange(chaos_ticks), tx) for tx in txs)
    partitioned = rng.random() < 0.5
    cut = (rng.randrange(chaos_ticks // 2), rng.randrange(chaos_ticks // 2, chaos_ticks))
    twin_plan = twin_partitions(plot, net, chaos_ticks) if net.twins else {}
    error = ""
    live = False
    try:
        for t in range(chaos_ticks):
            if partitioned and t == cut[0]:
                side = set(rng.sample(range(n), rng.randint(1, n - 1)))
                if not net.twins:
                    net.set_partition([side, set(range(n)) - side])
            if partitioned and t == cut[1] and not net.twins:
                net.set_partition(None)
            if t in twin_plan:
                net.set_partition(twin_plan[t])
            for _, tx in [s for s in schedule if s[0] == t]:
                net.submit(rng.choice(honest_idx), tx)
            net.run(1)
        net.set_partition(None)
        net.drop = 0.0
        wanted = {merkle.tx_hash(tx) for tx in txs}
        live = net.run_until(lambda: net.all_committed(wanted), heal_ticks)
    except SafetyViolation as exc:
        error = f"SafetyViolation: {exc}"
    return ScenarioResult(
        seed=seed,
        safety=net.safety_violations(),
        live=live,
        byzantine=byzantine,
        partitioned=partitioned or bool(twin_plan),
        heights=[len(nd.commits) for nd in net.honest],
        ticks=net.now,
        messages=net.messages_sent,
        error=error,
        n=n,
        empty_block_ticks=empty_block_ticks,
        min_block_ticks=min_block_ticks,
        epoch_blocks=epoch_blocks,
        epochs=max((nd.core.epoch for nd in net.honest if nd.core is not None), default=0),
        attacks=dict(net.adversary.counts),
    )
