"""Consensus and ledger messages: blocks, votes, certificates, genesis and ledger transactions,
and the peer transport's hello, sync request and response.

Consensus messages carry their own Ed25519 signatures (purposes ``b"consensus/proposal"``,
``b"consensus/vote"``, ``b"consensus/timeout"``) so that votes can be aggregated into quorum
certificates; they travel as ``encode``d bytes, not envelopes. Ledger transactions are ordinary
signed envelopes (``seal``). Adding a field to a message means declaring a new version of it.
"""

from __future__ import annotations

from typing import Annotated

from gonka_ray.constants import (
    LEDGER_MAX_BLOCK_TXS,
    LEDGER_MAX_VALIDATORS,
    PROTOCOL_VERSION,
    WIRE_CHAIN_ID_MAX_CHARS,
    WIRE_MAX_LIST_LEN,
    WIRE_MAX_MESSAGE_BYTES,
)
from gonka_ray.wire.codec import U32, U64, Bytes32, MaxLen, Name, Range, Signature, message, struct

# --- ledger / consensus ---------------------------------------------------------------------
# Owned by gonka_ray/ledger (issue 6). Consensus messages carry their own Ed25519 signatures
# (purposes b"consensus/proposal", b"consensus/vote", b"consensus/timeout") so that votes can be
# aggregated into quorum certificates; they travel as ``encode``d bytes, not envelopes. Ledger
# transactions are ordinary signed envelopes (``seal``).


@struct
class SignerSig:
    """One validator's signature, naming the validator by its index in the validator set."""

    index: Annotated[int, Range(0, LEDGER_MAX_VALIDATORS - 1)]
    signature: Signature


@struct
class QuorumCert:
    """> 2/3 of voting power signed ``(chain, view, block_hash)`` with purpose consensus/vote."""

    view: U64
    block_hash: Bytes32
    sigs: Annotated[list[SignerSig], MaxLen(LEDGER_MAX_VALIDATORS)]


@struct
class TimeoutSig:
    """One validator's signed timeout of a view, with the view of its highest QC."""

    index: Annotated[int, Range(0, LEDGER_MAX_VALIDATORS - 1)]
    high_qc_view: U64
    signature: Signature


@struct
class TimeoutCert:
    """> 2/3 of voting power timed out of ``view``."""

    view: U64
    sigs: Annotated[list[TimeoutSig], MaxLen(LEDGER_MAX_VALIDATORS)]


@struct
class BlockHeader:
    """What a block's hash covers. ``parent`` is always ``justify.block_hash``."""

    height: U64
    view: U64
    parent: Bytes32
    justify: QuorumCert
    tx_root: Bytes32  # Merkle root over sha256(tx) (see gonka_ray.ledger.merkle)
    tx_count: U32
    proposer: Annotated[int, Range(0, LEDGER_MAX_VALIDATORS - 1)]


@struct
class Block:
    header: BlockHeader
    txs: Annotated[list[Annotated[bytes, MaxLen(1024 * 1024)]], MaxLen(LEDGER_MAX_BLOCK_TXS)]


@message("ConsensusProposal", version=1)
class ConsensusProposal:
    """The leader of ``block.header.view`` proposes ``block``; ``tc`` justifies a view change."""

    block: Block
    tc: TimeoutCert | None
    signature: Signature  # by the proposer over (chain, view, block_hash)


@message("ConsensusVote", version=1)
class ConsensusVote:
    view: U64
    block_hash: Bytes32
    voter: Annotated[int, Range(0, LEDGER_MAX_VALIDATORS - 1)]
    signature: Signature


@message("ConsensusTimeout", version=1)
class ConsensusTimeout:
    view: U64
    high_qc: QuorumCert
    voter: Annotated[int, Range(0, LEDGER_MAX_VALIDATORS - 1)]
    signature: Signature  # over (chain, view, high_qc.view)


@message("ConsensusSyncInfo", version=1)
class ConsensusSyncInfo:
    """A replica's highest QC (and last TC), sent to a peer that is behind."""

    high_qc: QuorumCert
    tc: TimeoutCert | None


@message("ConsensusTxBatch", version=1)
class ConsensusTxBatch:
    """Transactions gossiped to the other replicas' mempools."""

    txs: Annotated[list[Annotated[bytes, MaxLen(1024 * 1024)]], MaxLen(LEDGER_MAX_BLOCK_TXS)]


@message("ConsensusBlockRequest", version=1)
class ConsensusBlockRequest:
    """Ask for the block ``block_hash`` and up to ``max_blocks - 1`` of its ancestors."""

    block_hash: Bytes32
    max_blocks: Annotated[int, Range(1, 1024)]


@message("ConsensusBlockResponse", version=1)
class ConsensusBlockResponse:
    """Blocks, newest first. Unsigned: a block is authenticated by its hash."""

    blocks: Annotated[list[Block], MaxLen(1024)]


@message("ConsensusSafety", version=1)
class ConsensusSafety:
    """A replica's safety state; persisted before any vote or timeout it covers is sent."""

    cur_view: U64
    last_voted_view: U64
    locked_hash: Bytes32
    high_qc: QuorumCert
    timeout_view: U64  # highest view this replica timed out of (0 = none)
    epoch: U64 = 0  # the consensus epoch these views belong to (ledger/consensus.py)


@message("CommitCertificate", version=1)
class CommitCertificate:
    """Proof that ``headers[0]`` is committed: a parent-linked header chain whose last three
    headers have consecutive views, plus the QC of the last one (a HotStuff 3-chain)."""

    headers: Annotated[list[BlockHeader], MaxLen(4096)]
    qc: QuorumCert


@message("TxReceipt", version=1)
class TxReceipt:
    """Offline-verifiable proof that transaction ``tx_hash`` is in a committed block."""

    tx_hash: Bytes32  # sha256 of the transaction bytes (the Merkle leaf)
    index: U32
    path: Annotated[list[Bytes32], MaxLen(64)]
    certificate: CommitCertificate
    ok: bool  # the state machine's verdict (reported by the replica, not proven)
    reason: Annotated[str, MaxLen(256)]


@struct
class GenesisAccount:
    address: Annotated[str, MaxLen(64)]
    balance: U64


@struct
class GenesisParticipant:
    public_key: Bytes32
    name: Name
    weight: U64  # voting power


@struct
class EvidenceRuleSpec:
    """The network's epoch-evidence rule (:class:`gonka_ray.protocol.verification_policy.
    EpochRule`), fixed in the genesis so every replica judges with the same numbers."""

    mu: float
    kappa: float
    z: float
    safety: float
    min_inferences: U32
    trim: float  # share of the evidence weight trimmed from each end
    sigma: float = 0.0  # sd of honest T times √(Σw): the bound narrows with evidence; 0: kappa


@struct
class ProtocolUpgrade:
    """Rules of protocol ``version`` apply to blocks from ``height`` on
    (:mod:`gonka_ray.protocol.versions`)."""

    version: U32
    height: U64


@struct
class LedgerParams:
    """The ledger's rule parameters, fixed in the genesis so every replica applies the same
    numbers. The genesis hash is bound into every consensus signature, so a replica started
    with other numbers (a joiner's edited config) cannot take part, rather than diverging in
    silence: block headers carry no state hash that would reveal the difference."""

    price_per_token: U64
    expiry_blocks: U32
    vote_blocks: U32
    epoch_blocks: U32
    poc_sprint_blocks: U32
    poc_validation_blocks: U32
    epochs_to_max_reputation: U32
    reward_per_epoch: U64
    weight_cap_share: float
    poc_difficulty: float
    poc_calibration_nonces: U32


ChainId = Annotated[str, MaxLen(WIRE_CHAIN_ID_MAX_CHARS)]


@message("LedgerGenesis", version=5)
class LedgerGenesis:
    """The definition every replica starts from.

    ``chain_id`` names the network and is bound into every envelope signature (see
    :func:`seal`); ``protocol_version`` is the rules version from height 0 and ``upgrades`` the
    scheduled later ones, so a replica replaying old blocks applies the rules they were written
    under.
    """

    chain_id: ChainId
    accounts: Annotated[list[GenesisAccount], MaxLen(WIRE_MAX_LIST_LEN)]
    participants: Annotated[list[GenesisParticipant], MaxLen(LEDGER_MAX_VALIDATORS)]
    epoch_evidence: EvidenceRuleSpec | None = None  # None: executors are judged per inference
    protocol_version: U32 = PROTOCOL_VERSION
    upgrades: Annotated[list[ProtocolUpgrade], MaxLen(64)] = ()
    params: LedgerParams | None = None  # None: each replica's own (in-process tests)


# Ledger transactions (signed envelopes). ``nonce`` is the signer's next account nonce.


@message("RegisterParticipant", version=1)
class RegisterParticipant:
    name: Name
    weight: U64  # must be 0: weight is earned (genesis, Proof-of-Compute), never self-declared
    nonce: U64


def parse_address(text: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:port"`` for IPv6) -> ``(host, port)``: a peer endpoint.

    Raises:
        ValueError: not of that form.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65_536:
        raise ValueError(f"not a host:port address: {text!r}")
    if any(c.isspace() for c in host):
        raise ValueError(f"not a host:port address: {text!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


@message("PeerEndpoint", version=1)
class PeerEndpoint:
    """A registered participant announces (or moves) the ``host:port`` of its peer endpoint:
    the others dial it there (see :func:`gonka_ray.ledger.state.peer_directory`)."""

    endpoint: Annotated[str, MaxLen(255)]
    nonce: U64


@message("Transfer", version=1)
class Transfer:
    to: Annotated[str, MaxLen(64)]  # an address (crypto.address)
    amount: U64
    nonce: U64


# --- peer transport (gonka_ray/peer/tcp.py) ---------------------------------------------------
# Frames between replicas over TCP. The hello is a signed envelope (``seal``) and authenticates
# the connection; requests and responses travel inside frames sealed with the session key.


@message("PeerHello", version=1)
class PeerHello:
    """One side's hello on a new peer connection (see :mod:`gonka_ray.peer.handshake`).

    Each side sends two, sealed with its node key for ``chain_id``: the first with an empty
    ``echo_nonce``, the second echoing the nonce of the other side's first hello, so that a
    recorded hello cannot be replayed on a new connection. ``session_key`` is this connection's
    ephemeral X25519 public key: the frame keys derive from it, so the signature binds them.
    """

    chain_id: ChainId
    index: Annotated[int, Range(0, LEDGER_MAX_VALIDATORS - 1)]  # the sender's genesis index
    nonce: Bytes32  # fresh per connection
    echo_nonce: Annotated[bytes, MaxLen(32)]  # the other side's nonce (empty in the first hello)
    session_key: Bytes32
    timestamp_ms: U64


@message("PeerRequest", version=1)
class PeerRequest:
    """Ask a peer replica for ``method``: ``"snapshot_offer"`` or ``"attest_state"`` (of
    ``height``)."""

    request_id: U64
    method: Annotated[str, MaxLen(32)]
    height: U64 = 0


@struct
class SnapshotOffer:
    """``LedgerReplica.snapshot_offer``'s answer (its dict, field for field)."""

    height: U64
    block: Annotated[bytes, MaxLen(WIRE_MAX_MESSAGE_BYTES)]  # wire.encode_body(Block)
    certificate: Annotated[bytes, MaxLen(WIRE_MAX_MESSAGE_BYTES)]  # wire.encode(CommitCertificate)
    state_hash: Bytes32
    snapshot: Annotated[bytes, MaxLen(WIRE_MAX_MESSAGE_BYTES)]


@struct
class StateAttestation:
    """``LedgerReplica.attest_state``'s answer (its tuple, in order)."""

    block_hash: Bytes32
    state_hash: Bytes32
    chain: Bytes32  # the epoch chain id
    public_key: Bytes32
    signature: Signature


@message("PeerResponse", version=1)
class PeerResponse:
    """The answer to the :class:`PeerRequest` ``request_id``: at most one of ``offer`` and
    ``attestation``; both None is the replica's None. ``error`` is empty, or why there is no
    answer (``"unknown_method"``, ``"too_large"``, ``"failed"``)."""

    request_id: U64
    offer: SnapshotOffer | None
    attestation: StateAttestation | None
    error: Annotated[str, MaxLen(64)] = ""


@message("PeerCall", version=1)
class PeerCall:
    """Call ``method`` of the peer's participant (``"execute"``, ``"payload"``): ``body`` is the
    method's signed envelope; the answer comes as :class:`PeerReply` frames of ``request_id``."""

    request_id: U64
    method: Annotated[str, MaxLen(32)]
    body: Annotated[bytes, MaxLen(WIRE_MAX_MESSAGE_BYTES)]


@message("PeerReply", version=1)
class PeerReply:
    """One item of the answer to the :class:`PeerCall` ``request_id`` (a streamed method sends
    several); ``end`` closes the answer, with ``error`` empty or why it failed
    (``"unknown_method"``, ``"too_large"``, ``"failed"``)."""

    request_id: U64
    body: Annotated[bytes, MaxLen(WIRE_MAX_MESSAGE_BYTES)] = b""
    end: bool = False
    error: Annotated[str, MaxLen(64)] = ""


@message("PeerCancel", version=1)
class PeerCancel:
    """The caller no longer wants the answer to ``request_id`` (its client left)."""

    request_id: U64


__all__ = [
    "Block",
    "BlockHeader",
    "ChainId",
    "CommitCertificate",
    "ConsensusBlockRequest",
    "ConsensusBlockResponse",
    "ConsensusProposal",
    "ConsensusSafety",
    "ConsensusSyncInfo",
    "ConsensusTimeout",
    "ConsensusTxBatch",
    "ConsensusVote",
    "EvidenceRuleSpec",
    "GenesisAccount",
    "GenesisParticipant",
    "LedgerGenesis",
    "LedgerParams",
    "PeerCall",
    "PeerCancel",
    "PeerEndpoint",
    "PeerHello",
    "PeerReply",
    "PeerRequest",
    "PeerResponse",
    "ProtocolUpgrade",
    "QuorumCert",
    "RegisterParticipant",
    "SignerSig",
    "SnapshotOffer",
    "StateAttestation",
    "TimeoutCert",
    "TimeoutSig",
    "Transfer",
    "TxReceipt",
    "parse_address",
]
