"""Deterministic ledger state machine: committed blocks in, state hash and receipts out.

Invariants:
- Same genesis and same blocks in the same order give the same state hash on every replica.
  Nothing here reads a clock, the environment or a global RNG; amounts are Python ints.
- A transaction is a signed envelope (:func:`gonka_ray.wire.seal`) of a registered type whose
  message has a ``nonce`` field equal to the signer's next account nonce. Its id is
  ``sha256(signature)``; an id that was applied once is rejected as ``duplicate`` forever after
  (Ray retries are at-least-once). Rejections are receipts with a reason, never exceptions:
  ``bad_envelope:<error>``, ``bad_signature``, ``unknown_type:<type>``, ``duplicate``,
  ``bad_nonce:expected=<n>,got=<m>`` and whatever a handler raises via :meth:`TxContext.reject`.
- A handler's writes are atomic: they land only if it returns without rejecting.

State is a set of tables ``{table: {key: value}}`` of msgpack-able values. The state hash is a
multiset hash (AdHash): the sum modulo 2**256 of ``sha256(pack([table, key, value]))`` over all
entries, then hashed once more. It is updated lazily: writes mark their entry dirty and the sum is
brought up to date when the hash is read (once per block), so an entry written many times in a
block (a busy account) is hashed once. NOTE: AdHash is enough to detect
divergence between replicas that run the same code; a light client that must trust a state
*proof* needs a Merkle tree instead (a later issue).

Validator sets (DESIGN §6, contract with the epoch code): table ``validator`` maps a participant
address to its voting power; genesis fills it from the genesis participants' weights and only
end-block hooks write it afterwards (settlement writes the next epoch's set there). With
``epoch_blocks = B > 0``, after the hooks of every epoch's last block (height ``(e+1)·B − 1``) the
state machine copies it into ``validator_set[e+1]`` as ``[[public_key, power], ...]`` (genesis
participants in genesis order, then others by key; addresses with no registered key are left
out; an empty or powerless result keeps the previous set). Consensus epoch ``e+1`` runs with
exactly that list (:mod:`gonka_ray.ledger.consensus`); keeping every epoch's set in state lets a
restarted or snapshot-synced replica find the set of the epoch it resumes in.

Extending: later issues add transaction types with :meth:`StateMachine.register` (a handler
``(ctx, msg) -> None``) and per-block logic (epochs, expiry) with :meth:`StateMachine.on_end_block`.
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from gonka_ray import crypto, wire
from gonka_ray.constants import LEDGER_PRECHECK_CACHE_TXS, MAX_AMOUNT, PEER_GUEST_INDEX
from gonka_ray.exceptions import BadSignature, TxRejected, UnknownMessageType, WireError
from gonka_ray.ledger import merkle
from gonka_ray.protocol.versions import Chain, chain_of
from gonka_ray.wire import (
    LedgerGenesis,
    PeerEndpoint,
    RegisterParticipant,
    Transfer,
    parse_address,
)

ACCOUNTS = "account"  # address -> [balance, nonce]
PARTICIPANTS = "participant"  # address -> [public_key, name, weight]
APPLIED = "applied_tx"  # tx_id -> height at which it was applied
META = "meta"  # "height" -> last applied height
VALIDATORS = "validator"  # address -> voting power (written by end-block hooks)
VALIDATOR_SETS = "validator_set"  # consensus epoch -> [[public_key, power], ...]
PEER_INDEX = "peer_index"  # address of a participant registered after genesis -> directory index
ENDPOINTS = "endpoint"  # address -> its announced peer endpoint "host:port"
_MOD = 2**256
_DELETED = object()
_FLAT = frozenset({int, str, bytes, bool, type(None)})  # canonical as they are
_address = functools.lru_cache(maxsize=65_536)(crypto.address)
_is_address = functools.lru_cache(maxsize=65_536)(crypto.is_address)

Handler = Callable[["TxContext", Any], None]
EndBlockHook = Callable[["TxContext"], None]


def canonical_pack(value: Any) -> bytes:
    """msgpack with dict keys sorted: one encoding per value."""
    return msgpack.packb(_canon(value), use_bin_type=True)


def _canon(v: Any) -> Any:
    if type(v) in (int, bytes, str, bool) or v is None:
        return v
    if isinstance(v, dict):
        return {k: _canon(v[k]) for k in sorted(v)}
    if isinstance(v, list | tuple):
        return [_canon(x) for x in v]
    return v


def _leaf(table: str, key: Any, value: Any) -> int:
    tv = type(value)
    if type(key) in _FLAT and (
        tv in _FLAT or (tv is list and all(type(x) in _FLAT for x in value))
    ):
        data = msgpack.packb([table, key, value], use_bin_type=True)  # already canonical
    else:
        data = canonical_pack([table, key, value])
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


@dataclass(frozen=True)
class TxResult:
    """One transaction's receipt in a block."""

    tx_id: bytes  # sha256(signature); sha256(tx bytes) when the envelope does not open
    tx_hash: bytes  # sha256(tx bytes): the Merkle leaf
    ok: bool
    reason: str  # "" when ok


@dataclass(frozen=True)
class BlockResult:
    height: int
    block_hash: bytes
    state_hash: bytes
    receipts: tuple[TxResult, ...]


class TxContext:
    """What a handler sees: the block, the signer, and transactional access to state."""

    def __init__(
        self,
        sm: StateMachine,
        *,
        height: int,
        block_hash: bytes,
        tx_id: bytes = b"",
        signer: bytes | None = None,
    ) -> None:
        self._sm = sm
        self._writes: dict[tuple[str, Any], Any] = {}
        self.height = height
        self.block_hash = block_hash
        self.tx_id = tx_id
        self.signer = signer  # public key, None in end-of-block hooks
        self.sender = _address(signer) if signer is not None else ""

    # --- generic tables --------------------------------------------------------------------

    @property
    def genesis(self) -> LedgerGenesis:
        """The network's genesis (its fixed protocol parameters)."""
        return self._sm.genesis

    @property
    def chain(self) -> Chain:
        """The network's chain id and rule schedule (from the genesis)."""
        return self._sm.chain

    def get(self, table: str, key: Any, default: Any = None) -> Any:
        v = self._writes.get((table, key), None)
        if v is _DELETED:
            return default
        if v is not None:
            return v
        return self._sm.tables.get(table, {}).get(key, default)

    def put(self, table: str, key: Any, value: Any) -> None:
        if value is None:
            raise ValueError("use delete() to remove an entry; None is not a value")
        self._writes[(table, key)] = value

    def delete(self, table: str, key: Any) -> None:
        self._writes[(table, key)] = _DELETED

    def keys(self, table: str) -> list[Any]:
        """Keys of ``table`` as this context sees them (committed plus pending writes), sorted."""
        keys = set(self._sm.tables.get(table, {}))
        for (t, k), v in self._writes.items():
            if t == table:
                if v is _DELETED:
                    keys.discard(k)
                else:
                    keys.add(k)
        return sorted(keys)

    @staticmethod
    def reject(reason: str) -> None:
        """Reject the transaction deterministically with ``reason``."""
        raise TxRejected(reason, reason=reason)

    # --- accounts ---------------------------------------------------------------------------

    def balance(self, address: str) -> int:
        return self.get(ACCOUNTS, address, [0, 0])[0]

    def nonce(self, address: str) -> int:
        return self.get(ACCOUNTS, address, [0, 0])[1]

    def credit(self, address: str, amount: int) -> None:
        _check_amount(amount)
        bal, nonce = self.get(ACCOUNTS, address, [0, 0])
        if bal + amount > MAX_AMOUNT:
            self.reject("overflow")
        self.put(ACCOUNTS, address, [bal + amount, nonce])

    def debit(self, address: str, amount: int) -> None:
        _check_amount(amount)
        bal, nonce = self.get(ACCOUNTS, address, [0, 0])
        if bal < amount:
            self.reject("insufficient_balance")
        self.put(ACCOUNTS, address, [bal - amount, nonce])


def _check_amount(amount: Any) -> None:
    if type(amount) is not int or amount < 0 or amount > MAX_AMOUNT:
        TxContext.reject("bad_amount")


class StateMachine:
    """Applies committed blocks. Construct from a :class:`~gonka_ray.wire.LedgerGenesis`."""

    def __init__(self, genesis: LedgerGenesis, *, epoch_blocks: int = 0) -> None:
        self.genesis = genesis
        self.chain = chain_of(genesis)  # refuses a rules version this software does not know
        self.epoch_blocks = epoch_blocks
        self.tables: dict[str, dict[Any, Any]] = {}
        self._leaves: dict[str, dict[Any, int]] = {}
        self._acc = 0
        self._dirty: dict[tuple[str, Any], None] = {}  # entries written since the hash was read
        self._opened: OrderedDict[bytes, Any] = OrderedDict()  # tx hash -> Signed | TxResult
        self.height = 0
        self.handlers: dict[type, Handler] = {}
        self.unsequenced: set[type] = set()
        self.end_block_hooks: list[EndBlockHook] = []
        self.register(Transfer, _transfer)
        self.register(RegisterParticipant, _register_participant)
        self.register(PeerEndpoint, _peer_endpoint)
        ctx = TxContext(self, height=0, block_hash=b"")
        for acct in genesis.accounts:
            if not crypto.is_address(acct.address):
                raise ValueError(f"genesis account {acct.address!r} is not an address")
            ctx.credit(acct.address, acct.balance)
        for p in genesis.participants:
            ctx.put(PARTICIPANTS, crypto.address(p.public_key), [p.public_key, p.name, p.weight])
            if p.weight > 0:
                ctx.put(VALIDATORS, crypto.address(p.public_key), p.weight)
        ctx.put(VALIDATOR_SETS, 0, [[p.public_key, p.weight] for p in genesis.participants])
        self._apply_writes(ctx)

    # --- extension points -------------------------------------------------------------------

    def register(self, tx_type: type, handler: Handler, *, sequenced: bool = True) -> None:
        """Handle signed messages of declared wire type ``tx_type`` (must have ``nonce``).

        ``sequenced`` transactions must carry the signer's next account nonce. Unsequenced ones
        use ``nonce`` as a salt only: several actors of one participant can sign concurrently
        without coordinating, and replay is still impossible because an applied transaction id
        is never applied again. Use it only for types whose handler is idempotent by content
        (the inference lifecycle: one Start per inference and attempt, one validation per
        validator, ...).
        """
        if getattr(tx_type, "TYPE", None) is None:
            raise TypeError(f"{tx_type!r} is not a declared wire message")
        if "nonce" not in {name for name, _ in tx_type.__wire_fields__}:
            raise TypeError(f"{tx_type.TYPE} needs a nonce field to be a transaction")
        self.handlers[tx_type] = handler
        if not sequenced:
            self.unsequenced.add(tx_type)

    def on_end_block(self, hook: EndBlockHook) -> None:
        """Run ``hook(ctx)`` after every block's transactions (epoch boundaries, expiry)."""
        self.end_block_hooks.append(hook)

    def _freeze_validators(self, ctx: TxContext, epoch: int) -> None:
        order = {p.public_key: i for i, p in enumerate(self.genesis.participants)}
        members = []
        for address in ctx.keys(VALIDATORS):
            power = ctx.get(VALIDATORS, address)
            record = ctx.get(PARTICIPANTS, address)
            if record is None or type(power) is not int or power < 0:
                continue
            members.append([record[0], power])
        members.sort(key=lambda m: (order.get(m[0], len(order)), m[0]))
        if not members or sum(m[1] for m in members) <= 0:
            members = ctx.get(VALIDATOR_SETS, epoch - 1)
        ctx.put(VALIDATOR_SETS, epoch, members)

    def validator_set(self, epoch: int) -> list[tuple[bytes, int]] | None:
        """``[(public_key, power), ...]`` of consensus epoch ``epoch`` (None: not yet known)."""
        members = self.get(VALIDATOR_SETS, epoch)
        return None if members is None else [(bytes(pk), int(w)) for pk, w in members]

    # --- queries ----------------------------------------------------------------------------

    def get(self, table: str, key: Any, default: Any = None) -> Any:
        return self.tables.get(table, {}).get(key, default)

    def balance(self, address: str) -> int:
        return self.get(ACCOUNTS, address, [0, 0])[0]

    def nonce(self, address: str) -> int:
        return self.get(ACCOUNTS, address, [0, 0])[1]

    @property
    def state_hash(self) -> bytes:
        self._rehash()
        return hashlib.sha256(b"gonka_ray/state\x00" + self._acc.to_bytes(32, "big")).digest()

    def _rehash(self) -> None:
        # NOTE: the sum is commutative, so settling the dirty entries in any order gives the
        # same accumulator as updating it at every write.
        acc = self._acc
        for table, key in self._dirty:
            leaves = self._leaves.setdefault(table, {})
            old = leaves.pop(key, None)
            if old is not None:
                acc -= old
            t = self.tables.get(table)
            if t is not None and key in t:
                leaf = _leaf(table, key, t[key])
                leaves[key] = leaf
                acc += leaf
        self._acc = acc % _MOD
        self._dirty.clear()

    # --- admission: verify a transaction once -----------------------------------------------

    def precheck(self, tx: bytes, tx_hash: bytes | None = None) -> bool:
        """Open (verify and decode) a transaction's envelope ahead of its block and keep the
        result, so that applying it later does not verify it again. Returns whether the
        envelope opened. Pure of state: a transaction that fails here is still applied (and
        rejected with a reason) if a block carries it.
        """
        th = tx_hash if tx_hash is not None else merkle.tx_hash(tx)
        hit = self._opened.get(th)
        if hit is None:
            hit = self._open(th, tx)
            self._opened[th] = hit
            if len(self._opened) > LEDGER_PRECHECK_CACHE_TXS:
                self._opened.popitem(last=False)
        return not isinstance(hit, TxResult)

    def _open(self, th: bytes, tx: bytes) -> Any:
        try:
            return wire.open_envelope(tx, chain=self.chain.id)
        except BadSignature:
            return TxResult(th, th, False, "bad_signature")
        except UnknownMessageType as exc:
            return TxResult(th, th, False, f"unknown_type:{exc.message[:80]}")
        except WireError as exc:
            return TxResult(th, th, False, f"bad_envelope:{type(exc).__name__}")

    # --- applying blocks --------------------------------------------------------------------

    def apply_block(self, height: int, block_hash: bytes, txs: tuple[bytes, ...]) -> BlockResult:
        """Apply one committed block's transactions in order; return receipts and state hash.

        Raises:
            ValueError: ``height`` is not the next height (the shell skipped or repeated one).
        """
        if height != self.height + 1:
            raise ValueError(f"expected block height {self.height + 1}, got {height}")
        receipts = tuple(self._apply_tx(height, block_hash, tx) for tx in txs)
        for hook in self.end_block_hooks:
            ctx = TxContext(self, height=height, block_hash=block_hash)
            hook(ctx)
            self._apply_writes(ctx)
        if self.epoch_blocks and (height + 1) % self.epoch_blocks == 0:
            ctx = TxContext(self, height=height, block_hash=block_hash)
            self._freeze_validators(ctx, (height + 1) // self.epoch_blocks)
            self._apply_writes(ctx)
        self.height = height
        return BlockResult(height, block_hash, self.state_hash, receipts)

    def _apply_tx(self, height: int, block_hash: bytes, tx: bytes) -> TxResult:
        th = merkle.tx_hash(tx)
        # A dict pop is atomic under the GIL: precheck may run on another thread.
        signed = self._opened.pop(th, None)
        if signed is None:
            signed = self._open(th, tx)
        if isinstance(signed, TxResult):
            return signed
        tx_id = signed.id
        handler = self.handlers.get(type(signed.message))
        if handler is None:
            return TxResult(tx_id, th, False, f"unknown_type:{type(signed.message).TYPE}")
        if tx_id in self.tables.get(APPLIED, {}):
            return TxResult(tx_id, th, False, "duplicate")
        ctx = TxContext(
            self, height=height, block_hash=block_hash, tx_id=tx_id, signer=signed.signer
        )
        sequenced = type(signed.message) not in self.unsequenced
        expected = ctx.nonce(ctx.sender)
        if sequenced and signed.message.nonce != expected:
            return TxResult(
                tx_id, th, False, f"bad_nonce:expected={expected},got={signed.message.nonce}"
            )
        try:
            handler(ctx, signed.message)
        except TxRejected as exc:
            return TxResult(tx_id, th, False, exc.reason)
        except Exception as exc:  # a handler bug must not stop the replica group
            return TxResult(tx_id, th, False, f"handler_error:{type(exc).__name__}")
        if sequenced:
            bal, nonce = ctx.get(ACCOUNTS, ctx.sender, [0, 0])
            ctx.put(ACCOUNTS, ctx.sender, [bal, nonce + 1])
        ctx.put(APPLIED, tx_id, height)
        self._apply_writes(ctx)
        return TxResult(tx_id, th, True, "")

    def _apply_writes(self, ctx: TxContext) -> None:
        # NOTE: each entry's leaf hash is kept, so settling an overwrite costs one hash, not two.
        dirty = self._dirty
        for tk, value in ctx._writes.items():
            table, key = tk
            t = self.tables.get(table)
            if t is None:
                t = self.tables[table] = {}
            if value is _DELETED:
                t.pop(key, None)
            else:
                t[key] = value
            dirty[tk] = None
        ctx._writes.clear()

    # --- snapshots --------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Canonical bytes of the whole state (height included)."""
        tables = {name: sorted(t.items()) for name, t in sorted(self.tables.items())}
        return canonical_pack([self.height, tables])

    def restore(self, data: bytes) -> None:
        """Replace the state with a :meth:`snapshot` (handlers and hooks are kept)."""
        height, tables = msgpack.unpackb(data, raw=False, strict_map_key=False)
        self.tables = {}
        self._leaves = {}
        self._acc = 0
        self._dirty = {}
        for name, items in tables.items():
            t: dict[Any, Any] = {}
            leaves: dict[Any, int] = {}
            for key, value in items:
                k = tuple(key) if isinstance(key, list) else key
                t[k] = value
                leaves[k] = _leaf(name, k, value)
                self._acc = (self._acc + leaves[k]) % _MOD
            self.tables[name] = t
            self._leaves[name] = leaves
        self.height = height


# --- base transactions ------------------------------------------------------------------------


def _transfer(ctx: TxContext, msg: Transfer) -> None:
    if not _is_address(msg.to):
        ctx.reject("bad_address")
    if msg.amount <= 0 or msg.amount > MAX_AMOUNT:
        ctx.reject("bad_amount")
    ctx.debit(ctx.sender, msg.amount)
    ctx.credit(msg.to, msg.amount)


def _register_participant(ctx: TxContext, msg: RegisterParticipant) -> None:
    if ctx.get(PARTICIPANTS, ctx.sender) is not None:
        ctx.reject("already_registered")
    if not msg.name:
        ctx.reject("bad_name")
    # NOTE: weight is voting power, draw share and vote weight; it is earned (genesis, then
    # Proof-of-Compute at epoch boundaries), never self-declared: a key registered with weight
    # would be a free sybil that outvotes everyone and validates its operator's own work.
    if msg.weight != 0:
        ctx.reject("weight_is_earned")
    ctx.put(PARTICIPANTS, ctx.sender, [ctx.signer, msg.name, msg.weight])
    # NOTE: the next free place in the peer directory (after the genesis participants): every
    # replica numbers the peers alike, in registration order.
    index = len(ctx.genesis.participants) + len(ctx.keys(PEER_INDEX))
    if index >= PEER_GUEST_INDEX:
        ctx.reject("directory_full")
    ctx.put(PEER_INDEX, ctx.sender, index)


def _peer_endpoint(ctx: TxContext, msg: PeerEndpoint) -> None:
    if ctx.get(PARTICIPANTS, ctx.sender) is None:
        ctx.reject("not_participant")
    try:
        parse_address(msg.endpoint)
    except ValueError:
        ctx.reject("bad_endpoint")
    ctx.put(ENDPOINTS, ctx.sender, msg.endpoint)


@dataclass(frozen=True)
class PeerEntry:
    """One place in the peer directory: who (key, account) and where it listens (None: not
    announced on the ledger)."""

    public_key: bytes
    address: str
    endpoint: str | None


def peer_directory(sm: StateMachine) -> list[PeerEntry]:
    """Every participant's place in the peer directory, by directory index: the genesis
    participants in genesis order, then the registered ones in registration order. The peer
    transport numbers its connections by it; a participant's index never changes."""
    entries: dict[int, PeerEntry] = {}
    for i, p in enumerate(sm.genesis.participants):
        a = _address(p.public_key)
        entries[i] = PeerEntry(p.public_key, a, sm.get(ENDPOINTS, a))
    for a, i in sm.tables.get(PEER_INDEX, {}).items():
        entries[int(i)] = PeerEntry(bytes(sm.get(PARTICIPANTS, a)[0]), a, sm.get(ENDPOINTS, a))
    return [entries[i] for i in range(len(entries))]
