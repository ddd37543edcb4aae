"""The one typed wire format: every message that crosses a participant boundary.

- :mod:`gonka_ray.wire.codec`: the format itself: field annotations, canonical msgpack, the
  ``@message`` registry, signed envelopes (``seal`` / ``open_envelope``).
- :mod:`gonka_ray.wire.protocol`: the inference protocol's messages (client request, lifecycle
  transactions, executor/verifier messages).
- :mod:`gonka_ray.wire.ledger`: consensus and ledger messages (blocks, votes, certificates,
  genesis, ledger transactions).

Importing this package registers every declared message, so :func:`decode` knows them all; use
the names from here (``wire.encode``, ``wire.StartInference``).
"""

from __future__ import annotations

from gonka_ray.wire.codec import *  # noqa: F403  (the codec's __all__)
from gonka_ray.wire.codec import __all__ as _codec_all
from gonka_ray.wire.ledger import (
    Block,
    BlockHeader,
    ChainId,
    CommitCertificate,
    ConsensusBlockRequest,
    ConsensusBlockResponse,
    ConsensusProposal,
    ConsensusSafety,
    ConsensusSyncInfo,
    ConsensusTimeout,
    ConsensusTxBatch,
    ConsensusVote,
    EvidenceRuleSpec,
    GenesisAccount,
    GenesisParticipant,
    LedgerGenesis,
    ProtocolUpgrade,
    QuorumCert,
    RegisterParticipant,
    SignerSig,
    TimeoutCert,
    TimeoutSig,
    Transfer,
    TxReceipt,
)
from gonka_ray.wire.protocol import (
    Address,
    ChatMessage,
    ExecuteRequest,
    ExecutionError,
    FinishInference,
    InferenceDone,
    InferenceRequest,
    OutputDelivered,
    Payload,
    PayloadRequest,
    Ping,
    PocClaim,
    PocVerdict,
    SamplingSpec,
    SeedCommit,
    SeedReveal,
    StartInference,
    StreamChunk,
    Validation,
    Vote,
)

__all__ = [
    *_codec_all,
    "Address",
    "Block",
    "BlockHeader",
    "ChainId",
    "ChatMessage",
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
    "ExecuteRequest",
    "ExecutionError",
    "FinishInference",
    "GenesisAccount",
    "GenesisParticipant",
    "InferenceDone",
    "InferenceRequest",
    "LedgerGenesis",
    "OutputDelivered",
    "Payload",
    "PayloadRequest",
    "Ping",
    "PocClaim",
    "PocVerdict",
    "ProtocolUpgrade",
    "QuorumCert",
    "RegisterParticipant",
    "SamplingSpec",
    "SeedCommit",
    "SeedReveal",
    "SignerSig",
    "StartInference",
    "StreamChunk",
    "TimeoutCert",
    "TimeoutSig",
    "Transfer",
    "TxReceipt",
    "Validation",
    "Vote",
]
