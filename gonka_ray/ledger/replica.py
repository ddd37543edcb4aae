"""The ledger replica shell: drives one consensus core with a clock, SQLite and peers.

:class:`LedgerReplica` is a plain class that reaches its peers only through the
:class:`~gonka_ray.ledger.transport.PeerTransport` it is given (unit tests pass an
:class:`~gonka_ray.ledger.transport.InProcessNetwork` link; a participant's replica actor passes
a :class:`~gonka_ray.peer.tcp.TcpPeerTransport`, started and closed with the replica), so nothing
here imports Ray. For each
:class:`~gonka_ray.ledger.ready.Ready` the shell **persists, then sends, then applies**:
``to_persist`` goes to SQLite (fsync'd by default: ``power_loss_safe``) before any message
leaves, so a vote is never sent that a restart, or a power cut, could forget; committed blocks are
applied to the state machine and recorded with their certificates and receipts.

A Ready that sends nothing and persists only a safety record (a QC seen: the lock and the high
QC moved on) is not written at once: the record goes out with the next write, which comes before
the next message this replica sends. Losing it in a crash is the same as that QC arriving late,
which consensus tolerates: no vote or timeout rests on it yet. That was one fsync'd SQLite
transaction per block per replica (measured 0.28 ms CPU each here, about an eighth of an idle
heartbeat block's cost).

Snapshot sync (``epoch_blocks > 0``): every replica keeps a state snapshot at the last block of
the latest epoch. A far-behind or wiped replica calls :meth:`LedgerReplica.snapshot_sync`: it
takes the newest offer (block, commit certificate, snapshot, state hash) and installs it only if
(1) the snapshot restores to exactly that height and state hash, (2) replicas holding more than
1/3 of the *genesis* voting power sign ``(genesis, height, block hash, state hash, epoch chain
id)`` with their keys (so at least one honest replica vouches for it, assuming, as consensus does
at genesis, that less than 1/3 of genesis power is byzantine), and (3) the commit certificate
verifies against the restored state's validator set for that epoch under the attested chain id.
NOTE: block headers do not commit to state (no app hash yet), so the certificate alone cannot
bind the snapshot; the attestations do. Then it recovers from its store as after a restart and
block-syncs the rest of the epoch through the consensus core.

Construction means recovery: Ray's ``max_restarts`` reruns ``__init__``, which reloads blocks,
the safety record, the latest state snapshot and the committed blocks after it, then catches up
from peers through the core's block fetching. Calls are idempotent: submitting a transaction twice
is harmless (mempool and state machine both dedupe), so ``max_task_retries`` is safe.

Corrupt store: when the SQLite file is damaged (not a database, ``quick_check`` finds damage, a
row does not decode, the snapshot does not restore, or replaying a block gives another state hash
than the recorded one), construction raises :class:`~gonka_ray.exceptions.CorruptStore` naming
the file and the damage (``on_corrupt_store="refuse"``, the default: an operator decides). With
``"resync"`` the file goes to ``<name>.corrupt-<time>`` (kept for a post-mortem), the replica
starts from an empty store and, once started, snapshot-syncs from its peers (retrying every
``LEDGER_RESYNC_RETRY_S`` until an offer installs or block sync has caught up with the newest
offer). NOTE: a resynced replica has lost its safety record too, so it could vote again in a view
it voted in before the damage; like wiping a replica, that is safe only while the other faulty
replicas stay within f, which is why resync is opt-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import msgpack

from gonka_ray import crypto, wire
from gonka_ray.constants import (
    LEDGER_CHECK_CHUNK_TXS,
    LEDGER_EMPTY_BLOCK_INTERVAL_MS,
    LEDGER_RESYNC_RETRY_S,
    LEDGER_START_RETRY_S,
)
from gonka_ray.exceptions import CommitTimeout, CorruptStore, Overloaded, StorageError
from gonka_ray.ledger import merkle
from gonka_ray.ledger.consensus import ConsensusCore, memory_floor
from gonka_ray.ledger.quorum import (
    Validator,
    ValidatorSet,
    block_hash,
    check_block,
    epoch_chain_id,
    verify_commit_certificate,
)
from gonka_ray.ledger.ready import Committed, Ready
from gonka_ray.ledger.state import PeerEntry, StateMachine, peer_directory
from gonka_ray.ledger.storage import LedgerStore, move_aside
from gonka_ray.ledger.transport import PeerTransport, SyncPeer
from gonka_ray.wire import (
    Block,
    CommitCertificate,
    ConsensusSafety,
    ConsensusSyncInfo,
    LedgerGenesis,
)

STATE_PURPOSE = b"ledger/state-attestation"

_log = logging.getLogger(__name__)


def validators_of(genesis: LedgerGenesis) -> ValidatorSet:
    return ValidatorSet([Validator(p.public_key, p.weight) for p in genesis.participants])


def attestation_bytes(
    genesis_hash: bytes, height: int, block: bytes, state_hash: bytes, chain: bytes
) -> bytes:
    """What a replica signs to vouch for the committed state at ``height``."""
    return msgpack.packb([genesis_hash, height, block, state_hash, chain], use_bin_type=True)


def epoch_validators(sm: StateMachine, epoch: int) -> ValidatorSet | None:
    """The set of consensus epoch ``epoch`` as committed state names it (None: not yet)."""
    members = sm.validator_set(epoch)
    return None if members is None else ValidatorSet([Validator(k, w) for k, w in members])


def empty_block_ticks(interval_ms: float, tick_ms: float) -> int:
    """Whole ticks of the empty-block interval (0 stays 0: heartbeat blocks off)."""
    if interval_ms <= 0:
        return 0
    return max(1, math.ceil(interval_ms / tick_ms))


class LedgerReplica:
    """One replica of the BFT ledger.

    Args:
        index: this replica's place in the peer directory (:func:`~gonka_ray.ledger.state.peer_directory`):
            its genesis index, or for a participant registered later the index its registration
            assigned (it follows the chain, and votes once an epoch's set names its key).
        key_seed: the 32-byte Ed25519 seed of this replica's participant key.
        genesis: the encoded :class:`~gonka_ray.wire.LedgerGenesis`.
        storage_dir: folder of this replica's SQLite file.
        transport: this replica's link to the others (consensus messages by genesis index,
            and the peers snapshot sync asks).
        tick_ms: wall-clock length of one consensus tick.
        timeout_ticks: ticks without progress before a view change.
        empty_block_interval_ms: an idle leader proposes an empty block after this long in its
            view (rounded up to whole ticks), so an idle chain's height keeps advancing; 0 = off.
        min_block_interval_ms: a leader waits this long in its view before proposing any block
            (rounded down to whole ticks, so less than a tick is off; block pacing, see the
            consensus module); 0 = off.
        max_block_txs: transactions per block.
        snapshot_every: blocks between state snapshots.
        install: ``install(state_machine)`` registers more transaction types.
        track_latency: record submit-to-commit latencies (benchmarks).
        power_loss_safe: every store commit fsyncs SQLite's write-ahead log
            (``synchronous=FULL``), so what the replica acknowledged or voted survives power loss
            (the default); ``False`` keeps only process-crash safety (``synchronous=NORMAL``),
            for tests and benchmarks; see the storage module.
        on_corrupt_store: what to do when the SQLite file is damaged (see
            :class:`~gonka_ray.exceptions.CorruptStore`): ``"refuse"`` (the default) raises it;
            ``"resync"`` renames the file to ``<name>.corrupt-<time>``, starts from an empty
            store and, with ``epoch_blocks > 0``, snapshot-syncs from the peers once started
            (block sync through the consensus core otherwise). See "Corrupt store" above.
        apply_in_thread: apply committed blocks in a worker thread (see ``_apply_loop``).
        epoch_blocks: blocks per epoch (``EpochConfig.epoch_blocks``): the validator set may
            change at each epoch boundary, read from committed state (see the consensus
            module); 0 keeps the genesis set forever.
        autostart: start (transport and ticks) by itself, from the running event loop, retrying
            while the transport cannot start (an actor shell: a restarted actor resumes alone).
    """

    def __init__(
        self,
        *,
        index: int,
        key_seed: bytes,
        genesis: bytes,
        storage_dir: str,
        transport: PeerTransport,
        tick_ms: float = 20.0,
        timeout_ticks: int = 50,
        empty_block_interval_ms: float = LEDGER_EMPTY_BLOCK_INTERVAL_MS,
        min_block_interval_ms: float = 0.0,
        max_block_txs: int = 2_000,
        snapshot_every: int = 100,
        install: Callable[[StateMachine], None] | None = None,
        track_latency: bool = False,
        power_loss_safe: bool = True,
        on_corrupt_store: Literal["refuse", "resync"] = "refuse",
        apply_in_thread: bool = False,
        epoch_blocks: int = 0,
        autostart: bool = False,
    ) -> None:
        self.index = index
        self.key = crypto.KeyPair.from_seed(key_seed)
        self.genesis = wire.decode(genesis, LedgerGenesis)
        self.validators = validators_of(self.genesis)
        self._transport = transport
        self.tick_s = tick_ms / 1000.0
        self.snapshot_every = snapshot_every
        self.apply_in_thread = apply_in_thread
        self._closed = False
        self.epoch_blocks = epoch_blocks
        self._install = install
        self._core_args = {
            "timeout_ticks": timeout_ticks,
            "max_block_txs": max_block_txs,
            "seed": index,
            "empty_block_ticks": empty_block_ticks(empty_block_interval_ms, tick_ms),
            "min_block_ticks": int(min_block_interval_ms // tick_ms),
            "admit": self._admit,
            "epoch_blocks": epoch_blocks,
        }
        self.moved_aside: Path | None = None  # where a corrupt store went ("resync")
        self._open_and_recover(
            Path(storage_dir) / f"replica-{index}.sqlite", power_loss_safe, on_corrupt_store
        )
        self._resync_pending = self.moved_aside is not None and epoch_blocks > 0
        self._resyncer: asyncio.Task | None = None
        self._newest_offer_height = 0  # the highest snapshot offer a peer has made
        self._state_hash = self.sm.state_hash  # as of the last applied block
        self._to_check: deque[tuple[bytes, bytes]] = deque()
        self._checker: asyncio.Task | None = None
        self._waiters: dict[bytes, list[asyncio.Future]] = {}
        self._ticker: asyncio.Task | None = None
        self._to_apply: deque[Committed] = deque()
        self._applier: asyncio.Task | None = None
        self._stopped = False  # stop() was called: ignore further input, never restart
        self._queued_height = self.sm.height
        self._autostart: asyncio.Task | None = None
        if autostart:
            # NOTE: Ray runs an async actor's constructor on its event loop. A replica Ray
            # restarted must listen, dial and tick again by itself: nobody calls start() twice.
            self._autostart = asyncio.get_running_loop().create_task(self._start_until_done())
        self.recovered_height = self.core.committed_height
        # Benchmarks: submit-to-commit latency of transactions submitted here (same clock).
        self.track_latency = track_latency
        self._submitted_at: dict[bytes, float] = {}
        self._latencies_s: list[float] = []
        self._committed_txs = 0

    def _new_state_machine(self) -> StateMachine:
        sm = StateMachine(self.genesis, epoch_blocks=self.epoch_blocks)
        if self._install is not None:
            self._install(sm)
        return sm

    def _open_and_recover(self, path: Path, power_loss_safe: bool, on_corrupt_store: str) -> None:
        """Open the store at ``path`` and recover from it; a corrupt one is refused or, with
        ``"resync"``, moved aside for an empty one (see "Corrupt store" in the module doc)."""
        if on_corrupt_store not in ("refuse", "resync"):
            raise ValueError(f"on_corrupt_store must be 'refuse' or 'resync': {on_corrupt_store!r}")
        store = None
        try:
            store = self.store = LedgerStore(path, power_loss_safe=power_loss_safe)
            self._recover()
        except CorruptStore as exc:
            if store is not None:
                store.close()
            if on_corrupt_store == "refuse":
                raise
            self.moved_aside = move_aside(path)
            _log.warning(
                "replica %d: %s; moved it to %s, starting empty and resyncing from peers",
                self.index,
                exc.problem,
                self.moved_aside,
            )
            self.store = LedgerStore(path, power_loss_safe=power_loss_safe)
            self._recover()

    def _recover(self) -> None:
        """(Re)build the state machine and the consensus core from the store."""
        # NOTE: a record the old core held back (see _carry_out) was never durable: the new
        # core starts from the store, as after a crash, so it is dropped, not written later.
        self._unsaved_safety: ConsensusSafety | None = None
        self.sm = self._new_state_machine()
        # NOTE: blocks from the previous epoch's base up, what the core keeps in memory: a
        # long chain's older blocks stay on disk (served to laggards from there)
        b = self.epoch_blocks
        top_epoch = (self.store.committed_height() + 1) // b if b else 0
        blocks_from = memory_floor(top_epoch, b)
        recovered = self.store.load(blocks_from=blocks_from)
        committed = recovered.first_height + len(recovered.committed_hashes) - 1
        if not recovered.committed_hashes:
            committed = 0
        if blocks_from > committed:  # a gap in the commits: the usable run ends lower
            recovered = self.store.load()
        self._rebuild_state(committed)
        epoch = None
        if b and (committed + 1) // b > 0:
            e = (committed + 1) // b
            vs = epoch_validators(self.sm, e)
            if vs is None or self.sm.height != committed:
                raise StorageError(f"cannot rebuild the validator set of epoch {e}")
            epoch = (e, vs)
        in_genesis = self.validators.index_of(self.key.public_key)
        if in_genesis is not None and in_genesis != self.index:
            raise ValueError(f"this key is genesis participant {in_genesis}, not {self.index}")
        self.core = ConsensusCore(
            self.validators,
            self.key,
            wire.digest(self.genesis),
            recovered=recovered,
            epoch=epoch,
            peer_index=None if in_genesis is not None else self.index,
            block_source=self._stored_block,
            **self._core_args,
        )
        self._directory: list[PeerEntry] = []
        self._refresh_directory()
        for e in range(epoch[0] if epoch else 0):  # so that laggards can be helped across
            found = self.store.committed_block((e + 1) * b - 1)
            if found is not None:
                self.core.epoch_proofs[e] = ConsensusSyncInfo(high_qc=found[1].qc, tc=None)

    def _stored_block(self, block_hash: bytes) -> Block | None:
        # NOTE: serves peers' block requests for blocks older than the core keeps in memory; a
        # damaged row only means this replica cannot serve that one (the peer asks another)
        try:
            return self.store.block(block_hash)
        except (CorruptStore, StorageError):
            return None

    def _rebuild_state(self, committed: int) -> None:
        snap = self.store.latest_snapshot()
        if snap is not None and snap[0] <= committed:
            try:
                self.sm.restore(snap[1])
            except Exception as exc:  # bytes that do not restore are damage, whatever fails
                raise CorruptStore(
                    str(self.store.path),
                    f"the snapshot at height {snap[0]} does not restore "
                    f"({type(exc).__name__}: {exc})",
                ) from None
        for h in range(self.sm.height + 1, committed + 1):
            found = self.store.committed_block(h)
            if found is None:
                break
            block, _, state_hash = found
            res = self.sm.apply_block(h, block_hash(block.header), block.txs)
            if res.state_hash != state_hash:
                raise CorruptStore(
                    str(self.store.path),
                    f"replaying block {h} gives a state hash other than the one recorded",
                )

    # --- remote API ------------------------------------------------------------------------

    async def _start_until_done(self) -> None:
        while not self._stopped:
            try:
                await self.start()
                return
            except OSError as exc:  # e.g. the address is still held by the process that died
                _log.warning("replica %d: transport not up yet (%s); retrying", self.index, exc)
                await asyncio.sleep(LEDGER_START_RETRY_S)

    async def start(self) -> int:
        """Start the transport and the tick loop (idempotent); returns the committed height."""
        await self._transport.start(self)
        self._ensure_started()
        return self.core.committed_height

    async def deliver(self, data: bytes, sender: int) -> None:
        """A consensus message from peer ``sender`` (fire-and-forget from the peer)."""
        if self._stopped:
            return
        self._ensure_started()
        self._carry_out(self.core.step(data, sender))

    async def deliver_many(self, batch: list[bytes], sender: int) -> None:
        """Several consensus messages from peer ``sender`` in one call, handled in order; what
        they produce is persisted in one write and then sent."""
        if self._stopped:
            return
        self._ensure_started()
        merged = Ready()
        for data in batch:
            r = self.core.step(data, sender)
            merged.to_persist += r.to_persist
            merged.outbound += r.outbound
            merged.committed += r.committed
        self._carry_out(merged)

    async def submit(self, tx: bytes) -> bytes:
        """Queue a signed transaction and hand it to the other replicas; returns its hash (the
        receipt key) once it is in this replica's mempool (or already known here).

        Raises:
            Overloaded: the mempool is full; the transaction was not taken (try another
                replica, or later).
        """
        self._ensure_started()
        th = merkle.tx_hash(tx)
        if not self.core.can_take(th):
            raise Overloaded(f"replica {self.index}: mempool full", retry_after_s=1.0)
        self._carry_out(self.core.submit(tx))
        return th

    async def submit_many(self, txs: list[bytes]) -> int:
        self._ensure_started()
        if self.track_latency:
            now = time.monotonic()
            for tx in txs:
                self._submitted_at.setdefault(merkle.tx_hash(tx), now)
        self._carry_out(self.core.submit_many(txs))
        return len(txs)

    async def take_metrics(self) -> dict[str, Any]:
        """Benchmarks: latencies (s) of committed transactions submitted here since the last
        call, and the count of all committed transactions so far."""
        lat, self._latencies_s = self._latencies_s, []
        return {"latencies_s": lat, "committed_txs": self._committed_txs, "time": time.monotonic()}

    async def receipt(self, tx_hash: bytes) -> bytes | None:
        """The encoded :class:`~gonka_ray.wire.TxReceipt`, or None while not committed."""
        r = self.store.receipt(tx_hash)
        return wire.encode(r) if r is not None else None

    async def wait_receipt(self, tx_hash: bytes, timeout_s: float = 10.0) -> bytes:
        """Wait until ``tx_hash`` commits; returns the encoded receipt.

        Raises:
            CommitTimeout: not committed within ``timeout_s`` (it may still commit).
        """
        self._ensure_started()
        r = self.store.receipt(tx_hash)
        if r is None:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(tx_hash, []).append(fut)
            try:
                await asyncio.wait_for(fut, timeout_s)
            except TimeoutError:
                raise CommitTimeout(
                    f"tx {tx_hash.hex()[:16]} not committed in {timeout_s} s"
                ) from None
            r = self.store.receipt(tx_hash)
            assert r is not None
        return wire.encode(r)

    async def status(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "committed_height": self.core.committed_height,
            "state_height": self.sm.height,
            "state_hash": self._state_hash,
            "view": self.core.cur_view,
            "mempool": len(self.core.mempool),
            "recovered_height": self.recovered_height,
            "resyncing": self._resync_pending,  # a corrupt store was moved aside, not caught up
            "stats": vars(self.core.stats),
        }

    def directory(self) -> list[PeerEntry]:
        """The peer directory as of the last applied block (see
        :func:`~gonka_ray.ledger.state.peer_directory`)."""
        return list(self._directory)

    async def epoch_context(self, height: int) -> tuple[bytes, list[tuple[bytes, int]]] | None:
        """``(chain id, [(public_key, power), ...])`` of the consensus epoch that committed
        ``height``: what a receipt of a block at that height verifies against. None when
        ``height`` is not committed and applied here."""
        if not 0 < height <= min(self.core.committed_height, self.sm.height):
            return None
        b = self.core.epoch_blocks
        e = height // b if b else 0
        members = self.sm.validator_set(e)
        if members is None:
            return None
        base = self.core.committed_hashes[e * b - 1] if e else self.core.genesis_hash
        return epoch_chain_id(self.core.genesis_hash, e, base), members

    # --- snapshot sync -----------------------------------------------------------------------

    def _latest_epoch_end(self) -> int | None:
        b = self.epoch_blocks
        if not b:
            return None
        h = ((self.sm.height + 1) // b) * b - 1
        return h if h > 0 else None

    async def snapshot_offer(self) -> dict[str, Any] | None:
        """The snapshot at the latest epoch's last block this replica applied, with its block,
        commit certificate and state hash (None when there is none yet)."""
        h = self._latest_epoch_end()
        if h is None:
            return None
        data = self.store.snapshot_at(h)
        found = self.store.committed_block(h)
        if data is None or found is None:
            return None
        block, cert, state_hash = found
        return {
            "height": h,
            "block": wire.encode_body(block),
            "certificate": wire.encode(cert),
            "state_hash": state_hash,
            "snapshot": data,
        }

    async def attest_state(self, height: int) -> tuple[bytes, bytes, bytes, bytes, bytes] | None:
        """``(block hash, state hash, epoch chain id, public key, signature)`` for the committed
        ``height`` (see the module docstring), or None when not committed and applied here."""
        found = self.store.committed_block(height)
        ctx = await self.epoch_context(height)
        if found is None or ctx is None:
            return None
        bh = block_hash(found[0].header)
        msg = attestation_bytes(self.core.genesis_hash, height, bh, found[2], ctx[0])
        return bh, found[2], ctx[0], self.key.public_key, self.key.sign(STATE_PURPOSE, msg)

    async def snapshot_sync(self, peers: Sequence[SyncPeer] | None = None) -> int:
        """Catch up from the newest verifiable peer snapshot above the committed height.

        Args:
            peers: the replicas to ask; default: the transport's ``sync_peers()``.

        Returns:
            The height installed, or 0 when no newer offer verified.
        """
        peers = list(peers) if peers is not None else self._transport.sync_peers()
        got = await asyncio.gather(*[p.snapshot_offer() for p in peers], return_exceptions=True)
        offers = sorted((o for o in got if isinstance(o, dict)), key=lambda o: -o["height"])
        if offers:
            self._newest_offer_height = max(self._newest_offer_height, offers[0]["height"])
        for offer in offers:
            if offer["height"] <= self.core.committed_height:
                break
            if await self._install_offer(offer, peers):
                return offer["height"]
        return 0

    async def _install_offer(self, offer: dict[str, Any], peers: list[SyncPeer]) -> bool:
        try:
            h = offer["height"]
            block = wire.decode_body(Block, offer["block"])
            cert = wire.decode(offer["certificate"], CommitCertificate)
            state_hash, data = offer["state_hash"], offer["snapshot"]
            bh = block_hash(block.header)
            if block.header.height != h or not check_block(block, 10**9):
                return False
            if not cert.headers or block_hash(cert.headers[0]) != bh:
                return False
            sm = self._new_state_machine()
            sm.restore(data)
        except Exception:  # a malformed offer is a refusal, not a crash
            return False
        if sm.height != h or sm.state_hash != state_hash:
            return False
        vs = epoch_validators(sm, h // self.epoch_blocks)
        if vs is None:
            return False
        atts = await asyncio.gather(*[p.attest_state(h) for p in peers], return_exceptions=True)
        power: dict[bytes, int] = {}
        seen: set[bytes] = set()
        for a in atts:
            if not isinstance(a, tuple | list) or len(a) != 5:
                continue
            abh, ash, chain, pk, sig = a
            idx = self.validators.index_of(pk)
            if abh != bh or ash != state_hash or idx is None or pk in seen:
                continue
            msg = attestation_bytes(self.core.genesis_hash, h, bh, state_hash, chain)
            if not crypto.is_valid_signature(pk, STATE_PURPOSE, msg, sig):
                continue
            seen.add(pk)
            power[chain] = power.get(chain, 0) + self.validators.validators[idx].power
        chain = next((c for c, p in power.items() if 3 * p > self.validators.total), None)
        if chain is None or not verify_commit_certificate(cert, vs, chain):
            return False
        await self.stop()
        self.store.install_snapshot(block, bh, cert, state_hash, data)
        self._recover()
        self._to_apply.clear()
        self._to_check.clear()
        self._queued_height = self.sm.height
        self._state_hash = self.sm.state_hash
        self.recovered_height = self.core.committed_height
        self._stopped = False  # paused only to swap the state in
        self._ensure_started()
        return True

    async def balance(self, address: str) -> int:
        return self.sm.balance(address)

    async def committed_hash(self, height: int) -> bytes | None:
        if 0 <= height <= self.core.committed_height:
            return self.core.committed_hashes[height]
        return None

    async def stop(self) -> None:
        """Stop ticking and handling messages; returns once committed blocks are applied and
        recorded (a peer's late message must not restart the replica or write to a closed
        store)."""
        self._stopped = True
        resyncer = self._resyncer
        if resyncer is not None and resyncer is not asyncio.current_task():
            resyncer.cancel()  # its snapshot_sync calls stop() itself: not that one
            with contextlib.suppress(asyncio.CancelledError):
                await resyncer
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._applier is not None:
            await self._applier
        if self._unsaved_safety is not None:
            self.store.persist([self._unsaved_safety])
            self._unsaved_safety = None

    async def close(self) -> None:
        """Stop (see :meth:`stop`), then close the store: SQLite checkpoints its write-ahead log
        into the database, so a clean shutdown leaves one self-contained file. Idempotent."""
        await self.stop()
        await self._transport.close()
        if not self._closed:
            self._closed = True
            self.store.close()

    # --- shell -----------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._ticker is None and not self._stopped:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())
        if self._resync_pending and self._resyncer is None and not self._stopped:
            self._resyncer = asyncio.get_running_loop().create_task(self._resync_loop())

    async def _resync_loop(self) -> None:
        # NOTE: after a corrupt store was moved aside: snapshot-sync until an offer installs, or
        # until block sync through the core has caught up with the newest offer (nothing newer
        # to install). Asking again every LEDGER_RESYNC_RETRY_S covers peers that are not up
        # yet or have no epoch-end snapshot yet.
        try:
            while self._resync_pending and not self._stopped:
                if await self.snapshot_sync():
                    break
                if 0 < self._newest_offer_height <= self.core.committed_height:
                    break
                await asyncio.sleep(LEDGER_RESYNC_RETRY_S)
            self._resync_pending = False
        finally:
            self._resyncer = None

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self._carry_out(self.core.tick())

    def _carry_out(self, ready: Ready) -> None:
        # 1. persist (durable before anything leaves), 2. send, 3. apply commits.
        to_persist = ready.to_persist
        if (
            not ready.outbound
            and to_persist
            and all(isinstance(x, ConsensusSafety) for x in to_persist)
        ):
            self._unsaved_safety = to_persist[-1]  # with the next write (module docstring)
            to_persist = []
        elif self._unsaved_safety is not None and (to_persist or ready.outbound):
            to_persist = [self._unsaved_safety, *to_persist]  # a newer record in it wins
            self._unsaved_safety = None
        self.store.persist(to_persist)
        for dest, data in ready.outbound:
            if dest is None:
                for i in range(self.core.n_peers):
                    if i != self.index:
                        self._transport.send(i, data)
            else:
                self._transport.send(dest, data)
        for c in ready.committed:
            if c.block.header.height <= self._queued_height:
                continue  # already applied (recovered) or queued
            self._queued_height = c.block.header.height
            self._to_apply.append(c)
        if self._to_apply and self._applier is None:
            self._applier = asyncio.get_running_loop().create_task(self._apply_loop())

    async def _apply_loop(self) -> None:
        # NOTE: blocks are applied in order by this one task, the only mutator of the state
        # machine. With apply_in_thread the work runs in a worker thread so that signature
        # checks of a big block (libsodium releases the GIL) do not stall consensus; queries
        # that iterate state tables must then tolerate concurrent writes, so it is opt-in.
        # SQLite is used from the event-loop thread only.
        try:
            while self._to_apply:
                c = self._to_apply.popleft()
                height = c.block.header.height
                if self.apply_in_thread:
                    res = await asyncio.to_thread(self.sm.apply_block, height, c.hash, c.block.txs)
                else:
                    res = self.sm.apply_block(height, c.hash, c.block.txs)
                self._state_hash = res.state_hash
                self.store.record_commit(c.block, c.hash, c.certificate, res)
                if c.block.txs:
                    self._refresh_directory()
                if self.core.ended and height == self.core.epoch_end_height:
                    nxt = self.core.epoch + 1
                    vs = epoch_validators(self.sm, nxt)
                    assert vs is not None  # written while applying the epoch's last block
                    self._carry_out(self.core.start_epoch(nxt, vs))
                end = self._latest_epoch_end()
                if height % self.snapshot_every == 0 or height == end:
                    # NOTE: the latest epoch-end snapshot is kept for snapshot sync.
                    keep = (end,) if end is not None else ()
                    self.store.save_snapshot(height, self.sm.snapshot(), keep=keep)
                self._committed_txs += len(res.receipts)
                if self.track_latency and self._submitted_at:
                    now = time.monotonic()
                    for r in res.receipts:
                        t0 = self._submitted_at.pop(r.tx_hash, None)
                        if t0 is not None:
                            self._latencies_s.append(now - t0)
                for r in res.receipts:
                    for fut in self._waiters.pop(r.tx_hash, []):
                        if not fut.done():
                            fut.set_result(True)
        finally:
            self._applier = None

    def _refresh_directory(self) -> None:
        # NOTE: the peer directory is committed state (registrations, announced endpoints); the
        # transport dials what it names and the core broadcasts to every place in it.
        directory = peer_directory(self.sm)
        if directory != self._directory:
            self._directory = directory
            self.core.n_peers = max(self.core.n_peers, len(directory))
            self._transport.set_directory(directory)

    def _admit(self, tx_hash: bytes, tx: bytes) -> None:
        # NOTE: each transaction's envelope is verified once, soon after it enters the mempool,
        # by a task that checks LEDGER_CHECK_CHUNK_TXS at a time and yields in between, so votes
        # and proposals are not held up behind a big gossip batch; apply then finds the opened
        # envelope in the state machine's cache. One that commits before its turn (the check
        # queue is long, or a block from another leader carries it) is verified by apply
        # instead and skipped here: still once. A worker thread was tried and lost: the GIL
        # hand-offs with the event loop cost more than they saved.
        self._to_check.append((tx_hash, tx))
        if self._checker is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # not serving yet (recovery): apply verifies
            self._checker = loop.create_task(self._check_loop())

    async def _check_loop(self) -> None:
        try:
            while self._to_check:
                for _ in range(min(LEDGER_CHECK_CHUNK_TXS, len(self._to_check))):
                    th, tx = self._to_check.popleft()
                    if th in self.core.mempool:
                        self.sm.precheck(tx, th)
                await asyncio.sleep(0)
        finally:
            self._checker = None
