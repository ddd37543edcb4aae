"""Tunables in one place, each with its unit in the name, plus ``GONKA_*`` environment parsing.

What lives here: every **tunable** number the code uses — timeouts, intervals, TTLs, limits and
caps, default sizes, budgets, retry counts, thresholds that are settings — grouped by subsystem,
each with a one-line comment. What does not: **identifiers**, which stay next to the code that
defines them (ledger table names, signature purposes, SQL schemas, tuples of kind names, wire
type names, format versions and magic numbers, fixed-point units such as ``MICRO`` and ``BPS``,
math constants such as ``INT64_MAX``, sizes an algorithm fixes such as Ed25519's). A name is
defined in one module only; ``tests/unit/test_constants.py`` checks both rules.

Values in the "protocol rules" section (and the PoC and verification thresholds a validator
applies) decide what the ledger accepts: every replica must use the same value, so on a running
network change one only together with a new protocol version (:mod:`gonka_ray.protocol.versions`).

Every tunable the code reads from the environment is declared in :data:`ENV_VARS` and parsed by
:func:`env`; a bad value raises :class:`~gonka_ray.exceptions.ConfigError` naming the variable.
Nothing here reads the environment at import time, so tests can set variables freely.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gonka_ray.exceptions import ConfigError

# --- wire ----------------------------------------------------------------------------------
WIRE_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # largest envelope we decode (payload responses)
WIRE_MAX_STR_CHARS = 1024 * 1024  # default cap on a string field
WIRE_MAX_BYTES_LEN = 8 * 1024 * 1024  # default cap on a bytes field
WIRE_MAX_LIST_LEN = 65_536  # default cap on list fields
WIRE_SIGNATURE_DOMAIN = b"gonka_ray/v1/"  # domain tag prefixed to every signed byte string
WIRE_CHAIN_ID_MAX_CHARS = 96  # a network's chain id: its name (<= 64) + "-" + 16 hex digits
LEDGER_MAX_BLOCK_TXS = 100_000  # hard cap on transactions in one block (config caps it lower)
LEDGER_MAX_VALIDATORS = 1_024  # validators in one set (wire cap on indexes and certificates)
# the hello index of a peer outside the directory (a joiner before its registration commits)
PEER_GUEST_INDEX = LEDGER_MAX_VALIDATORS - 1
POC_MAX_CLAIMED_NONCES = 65_536  # passing nonces in one PoC claim (about 0.5 MiB)
# The protocol rules version a new network starts with (gonka_ray/protocol/versions.py lists them;
# a genesis names its starting version and any scheduled upgrades by height).
PROTOCOL_VERSION = 5

# --- requests ------------------------------------------------------------------------------
REQUEST_MAX_AGE_S = 60.0  # a signed request older than this is rejected
# public lookups (GET /v1/inferences/{id}, /v1/explorer) per client address: a ledger read each
LOOKUP_RATE_PER_S = 10.0
LOOKUP_BURST = 30
REQUEST_MAX_SKEW_AHEAD_S = 30.0  # ... and one dated further in the future too
DEFAULT_TOP_K_LOGPROBS = 5  # k of the verification artifact (DESIGN §3)
MAX_TOP_K_LOGPROBS = 20  # the OpenAI API's top_logprobs limit
# ranks an engine returns per position at most: the API's, and an executor's private ranks for
# auditing verification receipts beyond them (2 × RECEIPT_RANKS, gonka_ray/protocol/receipts.py)
ENGINE_MAX_TOP_K_LOGPROBS = MAX_TOP_K_LOGPROBS + 16
DEFAULT_MAX_TOKENS = 128  # completion tokens when the client names none
DEFAULT_PRICE_PER_TOKEN = 1  # integer units per prompt or completion token
# A client's default ``max_escrow`` is bounded by its own request, so that nobody can lock or
# charge more than that request can cost (a TA overstating the prompt, say). Tokenisers give at
# most ~one token per UTF-8 byte (byte-level BPE: exactly at most one; SentencePiece with byte
# fallback adds at most a word-boundary piece per word), and a chat template adds a few tokens
# per message and a default system prompt (gonka_ray.protocol.payments.request_escrow_bound).
ESCROW_PROMPT_TOKENS_PER_BYTE = 2  # prompt tokens assumed per UTF-8 byte of the messages
ESCROW_TEMPLATE_TOKENS_PER_MESSAGE = 16  # chat-template tokens assumed per message
ESCROW_TEMPLATE_TOKENS = 256  # chat-template tokens assumed per request (a system prompt)

# --- ledger --------------------------------------------------------------------------------
NETWORK_STOP_DRAIN_TIMEOUT_S = 30.0  # graceful stop: the most each drain or flush step waits
LEDGER_BLOCK_MAX_TXS = 2_000  # transactions per block
LEDGER_BLOCK_INTERVAL_MS = 20  # leader waits this long to batch before proposing
LEDGER_VIEW_TIMEOUT_MS = 2_000  # view change when no progress for this long
LEDGER_EMPTY_BLOCK_INTERVAL_MS = 100  # idle leader proposes an empty block after this (0 = off)
LEDGER_MIN_BLOCK_INTERVAL_MS = (
    60  # a leader waits this long in its view before any proposal (pacing)
)
LEDGER_EXPIRY_BLOCKS = 600  # a Start with no Finish in this many blocks is refunded
LEDGER_VIEW_TIMEOUT_MAX_BACKOFF = 8  # the view timeout grows to at most this multiple
# an idle replica broadcasts its high QC (sync info) every this many view timeouts
LEDGER_IDLE_SYNC_TIMEOUTS = 8
LEDGER_SYNC_MAX_PARKED = 512  # consensus messages parked while their block is fetched
LEDGER_SYNC_FETCH_BLOCKS = 64  # blocks asked for in one block-sync fetch
LEDGER_CHECK_CHUNK_TXS = 64  # envelopes verified between two turns of the event loop (~3 ms)
LEDGER_PRECHECK_CACHE_TXS = 100_000  # opened envelopes kept between admission and apply
LEDGER_RESYNC_RETRY_S = 1.0  # seconds between snapshot-sync tries of a replica resyncing
MAX_AMOUNT = 2**63 - 1  # largest balance or amount, in units (the wire's int64)

# --- peer transport (framed TCP between replicas: gonka_ray/peer/tcp.py) ---------------------
# NOTE: an honest replica sends a peer one message per transaction submitted to it singly (a TA's
# submit gossips it at once) plus a few per block: at the ledger's target of 5,000 tx/s, all
# through one replica, that is ~5,000 messages/s and ~4 MB/s (gossip + proposals). The inbound
# limits are 4-8x that, so only a broken or hostile peer meets them: it is cut off and, for a
# protocol violation, its index is refused for PEER_BAN_S (consensus tolerates the loss).
PEER_MAX_FRAME_BYTES = WIRE_MAX_MESSAGE_BYTES + 64 * 1024  # after the handshake; larger: cut
PEER_MAX_HELLO_BYTES = 1_024  # a frame before the handshake completes (a sealed hello is ~210)
PEER_BATCH_MAX_BYTES = 1024 * 1024  # consensus messages packed into one frame, at most
PEER_BATCH_MAX_MSGS = 1_024  # messages in one frame, at most (more in a received frame: cut)
PEER_OUTBOUND_QUEUE_MSGS = 10_000  # messages waiting for one peer; more are dropped (counted)
PEER_OUTBOUND_QUEUE_BYTES = 64 * 1024 * 1024  # ... and their bytes
PEER_WRITE_BUFFER_BYTES = 4 * 1024 * 1024  # socket buffer above which the queue waits to write
PEER_INBOUND_MSGS_PER_S = 20_000  # sustained messages from one peer (a non-batch frame: one)
PEER_INBOUND_MSGS_BURST = 40_000  # token-bucket depth of that limit
PEER_INBOUND_BYTES_PER_S = 32 * 1024 * 1024  # sustained bytes from one peer
PEER_INBOUND_BURST_BYTES = 2 * PEER_MAX_FRAME_BYTES  # token-bucket depth (a snapshot fits)
PEER_HANDSHAKE_TIMEOUT_S = 5.0  # from accept/connect to an authenticated session
PEER_FRAME_TIMEOUT_S = 10.0  # a started frame completes within this (plus its size at...)
PEER_MIN_FRAME_BYTES_PER_S = 1024 * 1024  # ...this rate), or the connection is cut (slow drip)
PEER_PING_INTERVAL_S = 5.0  # a connection idle this long sends a ping
PEER_IDLE_TIMEOUT_S = 30.0  # no frame from the peer for this long: cut (half-open connection)
PEER_CHECK_INTERVAL_S = 0.5  # how often each connection checks its deadlines
PEER_MAX_CONNECTIONS_PER_SOURCE = 16  # inbound connections from one IP address
PEER_MAX_CONNECTIONS = 256  # inbound connections in all
PEER_MAX_GUESTS = 16  # guest sessions at once (keys outside the directory: joiners registering)
JOIN_RECEIPT_TIMEOUT_S = 30.0  # a member waits this long for a joiner's transaction to commit
PEER_HELLO_MAX_SKEW_S = 300.0  # a hello's timestamp may differ from our clock by this much
PEER_CONNECT_TIMEOUT_S = 5.0  # one TCP connect attempt
PEER_RECONNECT_MIN_S = 0.05  # first redial delay (doubles per failure, with jitter)...
PEER_RECONNECT_MAX_S = 5.0  # ...up to this
PEER_REQUEST_TIMEOUT_S = 30.0  # a sync request (snapshot offer, attestation) waits this long
PEER_MAX_INFLIGHT_REQUESTS = 8  # sync requests outstanding on one connection (more: cut)
PEER_BAN_S = 10.0  # a peer index cut for a protocol violation may not reconnect for this long
PEER_LOCAL_PORTS = range(20_000, 32_000)  # loopback ports picked for local networks: not Ray's
PEER_MAX_INFLIGHT_CALLS = 256  # calls (executions, payload fetches) one peer has open here
PEER_CALL_IDLE_TIMEOUT_S = 300.0  # a call's answer waits this long for its next item
LEDGER_PORT_RETRY_S = 0.5  # a participant's roles resubmit to their restarting replica this often
LEDGER_START_RETRY_S = 0.5  # a replica whose transport could not start (address held) retries
REPLICA_WARM_HANDLE_TIMEOUT_S = 300.0  # a replica looks up its executor's handle this long at start
FEDERATION_NODE_START_TIMEOUT_S = (
    300.0  # a local federation waits this long for a node's ready file
)
FEDERATION_JOIN_TIMEOUT_S = 120.0  # a joiner tries its peers this long to get registered
FEDERATION_JOIN_RETRY_S = 1.0  # between rounds of its peers
FEDERATION_NODE_STOP_GRACE_S = 60.0  # after SIGTERM, a node still running this long is killed
FEDERATION_OBJECT_STORE_BYTES = 256 * 1024 * 1024  # each node's own Ray object store

# --- epochs and reputation -------------------------------------------------------------------
EPOCH_BLOCKS = 600  # blocks per epoch
EPOCHS_TO_MAX_REPUTATION = 30  # reputation reaches 100 after this many clean epochs
WEIGHT_CAP_SHARE = 0.25  # no participant's weight exceeds this share of the total
VALIDATION_FPR = 0.05  # assumed false-positive rate of one check (status rule)
INVALID_PROBABILITY_THRESHOLD = 1e-6  # fpr ** consecutive_invalid below this => INVALID

# --- protocol rules (every replica must agree; see the module docstring) ---------------------
# NOTE: each attempt is a fresh executor draw, so a TA free to name any attempt could grind
# attempts until the draw lands on a friend; the ledger accepts only attempts
# 0..INFERENCE_MAX_ATTEMPTS-1, and a TA gives up (503) after as many.
INFERENCE_MAX_ATTEMPTS = 3  # executor draws per inference (the first try and two retries)
REPUTATION_Z_SCORE_LIMIT = 1.0  # failure z-score above which a checked executor is INVALID
REPUTATION_MIN_CHECKED_FOR_Z = 10  # checked inferences before the z-score rule applies
VALIDATION_MAX_AVG_CHECKS = 1.0  # expected checks per inference at reputation 0 (max_avg)
MIN_CHECKS_PER_EPOCH = 16  # checks of each executor's work per epoch, at least (deterrence)
SETTLEMENT_SHARE_DIVISOR = 10  # settlement window = 1/10 of the post-PoC blocks (at least 1)
EVIDENCE_CLAMP_RATIO = 3.0  # an inference's ratio counts up to this many times μ (int8's ~1.65 μ)
LEDGER_EVIDENCE_KEPT_EPOCHS = 16  # epoch-evidence tallies kept for explorers and the demo
DEFAULT_VALIDATOR_FEE_SHARE_BPS = 1_000  # 10% of a validated inference's cost to its validators
DEFAULT_ALLOWED_MISS_SHARE = 0.10  # a validator may miss up to 10% of its required checks...
DEFAULT_DUTY_ALPHA = 0.01  # ...forfeiting only when P(misses | 10%) is below this
# verification receipts (protocol v3, gonka_ray/protocol/receipts.py): a pass names, at this many
# output positions, the validator's (k+1)-th most likely token and its logprob
RECEIPT_POSITIONS = 4
RECEIPT_RANKS = 8  # ... which must lie in the reference's top k + RANKS (noise reorders near-ties)
RECEIPT_TOLERANCE_NATS = 1.0  # ... with a logprob within this of the reference's
RECEIPT_LOGPROB_FLOOR_MICRO = -(10**9)  # a receipt logprob below -1000 nats is malformed
# blocks a challenged validator has to reveal its receipt's key (~1 min at 100 ms blocks: a busy
# or restarting verifier must not lose an honest receipt for answering late)
RECEIPT_REVEAL_BLOCKS = 600

# --- proof of compute ----------------------------------------------------------------------
POC_TOLERANCE = 1e-4  # verifier slack on the distance for float differences between devices
POC_MAX_NONCE = 1 << 62  # claimed nonces must lie in [0, POC_MAX_NONCE)
DEFAULT_POC_SAMPLE_SIZE = 100  # nonces each validator recomputes per claim
DEFAULT_POC_HONEST_FAIL_RATE = 0.01  # failure rate an honest claim may show (device mismatch)
DEFAULT_POC_ALPHA = 1e-3  # reject a claim when P(≥ failures | honest rate) is below this
POC_SPRINT_COMPUTE_SHARE = 0.5  # of a sprint's remaining time spent computing (rest: commit)

# --- participant roles ---------------------------------------------------------------------
EXECUTOR_MAX_INFLIGHT = 64  # executions at once; one more is refused with code "overloaded"
EXECUTOR_PARTICIPANTS_TTL_S = 1.0  # how old the participant set a draw is checked against may be
EXECUTOR_FINISH_RETRY_S = 0.2  # wait between Finish attempts while the Start is not committed
EXECUTOR_FINISH_POLL_MAX_S = 2.0  # longest wait between reads for a Start not committed yet
EXECUTOR_FINISH_TRY_S = 60.0  # one round of Finish submissions; then it waits for the next sweep
EXECUTOR_FINISH_SWEEP_S = 10.0  # how often journalled Finishes nobody submits are resent
# a Finish whose Start is still unknown after this long is dropped (if that Start ever commits,
# it expires and the client is refunded). Well above TA_SUBMIT_DEADLINE_S +
# TA_SUBMIT_TAKEN_DEADLINE_S: a TA resends its Start that long, and a Start already in a
# mempool can commit after a view change.
EXECUTOR_FINISH_WAIT_START_S = 900.0
EXECUTOR_ATTEMPTS_KEPT = 10_000  # drawn attempts remembered (to drop a superseded Finish)
EXECUTOR_FINISH_FAILURES_KEPT = 100  # rejected Finish reasons kept for stats (the newest)
TA_MAX_INFLIGHT = 128  # requests one TA serves at once; one more gets 429 (nothing escrowed)
TA_RETRY_AFTER_S = 1.0  # Retry-After of a TA's Overloaded answer
TA_TIMINGS_KEPT = 1_000  # per-request timings kept for stats (the newest)
TA_SUBMIT_DEADLINE_S = 60.0  # resend a Start no replica took in yet (its client waits) this long
# once a replica took a Start in (its client may hold the answer), resend it, and the
# OutputDelivered after it, this long: a leader restart on a loaded machine has taken minutes
TA_SUBMIT_TAKEN_DEADLINE_S = 300.0
PAYLOAD_FETCH_TIMEOUT_S = 2.0  # one payload fetch: no answer by then is a failed attempt
# A verifier asks again for a payload it could not fetch (executor restarting, peer link down);
# only when its fetch window ends is it a failed check. A check's window ends after
# PAYLOAD_FETCH_WINDOW_S, or where the settlement phase before its epoch's settlement begins (at
# least VERIFIER_FETCH_MARGIN_BLOCKS before it); a vote's a third of the way from its first
# retry to the vote's deadline (its accuser already waited a whole window). Withholding never
# pays.
PAYLOAD_FETCH_WINDOW_S = 60.0
PAYLOAD_FETCH_RETRY_S = 2.0  # a check's first retry; it doubles up to VERIFIER_RETRY_MAX_S
VERIFIER_FETCH_MARGIN_BLOCKS = 4
VERIFIER_VOTE_RETRY_S = 0.5  # a vote's retry (its window ends a third of the way to the deadline)
VERIFIER_RETRY_MAX_S = 30.0
VERIFIER_OWN_FAILURE_RETRIES = 8  # a check or vote failing on the verifier's own side
VERIFIER_EVENTS_WAIT_S = 2.0  # a verifier's long poll for the next block with events
VERIFIER_RANKS_KEPT = 256  # recent checks whose ranks a verifier keeps (receipts, judging)
VERIFIER_OWN_FINISHES_KEPT = 65_536  # own executor's recent inferences whose passes it audits
VERIFIER_METRICS_PUBLISH_INTERVAL_S = 2.0  # how often a verifier publishes its counters
EPOCH_WORKER_BLOCK_GUESS_S = 0.1  # block-time guess until the epoch worker has seen two views
MLNODE_MAX_CONCURRENCY = 256  # concurrent streams per MLNode; the engine batches them
REPLICA_METRICS_SCAN_INTERVAL_S = 1.0  # how often a replica rescans records for its gauges

# --- HTTP ingress and SDK --------------------------------------------------------------------
SERVE_DEFAULT_PORT = 8000  # where Serve's HTTP proxy listens unless told otherwise
SERVE_MAX_ONGOING_REQUESTS = 256  # per replica; Serve's default of 5 starves streaming
SERVE_MAX_INFLIGHT = 200  # requests in flight per replica before 429 (below the Serve cap)
SERVE_RETRY_AFTER_S = 1.0  # Retry-After on the ingress's 429
# largest request body the ingress reads (413 above; the wire caps a signed request at 4 MiB)
SERVE_MAX_BODY_BYTES = 4 * 1024 * 1024
SERVE_MAX_INFLIGHT_PER_CLIENT = 64  # requests one client (API key or signer) has in flight; 429
INGRESS_PARTICIPANTS_TTL_S = 5.0  # how long the ingress caches the ledger's participant statuses
INGRESS_TOKEN_CACHE_ENTRIES = 100_000  # token id -> string entries kept by the ingress
CONTEXT_SLACK_TOKENS = 64  # chat-template tokens a byte count may miss (ingress context check)
EXPLORER_TTL_S = 1.0  # how long the ingress reuses one explorer snapshot (many open pages)
EXPLORER_RECENT_INFERENCES = 25  # recent inferences shown by the explorer
SDK_CONNECT_TIMEOUT_S = 30.0  # how long connect() waits for a network's actors to be listed

# --- verification ----------------------------------------------------------------------------
MAX_ARTIFACT_TOKENS = 1 << 20  # prompt or output tokens of one decoded artifact, at most
ARTIFACT_ZLIB_LEVEL = 6  # compression level of an artifact's planes
DISTANCE_MIN_TOKENS = 100  # the distance's normaliser is max(DISTANCE_MIN_TOKENS, N) (Gonka's)
EVIDENCE_W_FLOOR = 0.01  # a token's evidence weight max(1 − p, floor): p ≈ 1 still counts
MAX_PLAUSIBLE_LOGPROB = 1e4  # |logprob| beyond this is no model's output: a forged artifact
SCORE_BLOCK_POSITIONS = 16  # positions per sampler call when a verifier replays a prefill
# NOTE: floors under the fitted values: insurance against honest noise the calibration never
# saw (another engine, a longer context). The fp32 fit asks for ~1e-4 on SmolLM2; int8 weights
# move the mean excess by > 0.02, so floors of 0.001 cost no detection power.
CALIBRATION_MIN_GATE = 0.005  # replay gate floor, raw logit units
CALIBRATION_MIN_EXCESS = 0.001  # mean logprob excess floor
# an fp32 row's μ (~1e-6) is floored to this: far below any cheat's ~0.04
CALIBRATION_MIN_EPOCH_MU = CALIBRATION_MIN_EXCESS
CALIBRATION_TARGET_FPR = 1e-3  # per verified output, both checks together
CALIBRATION_SAFETY = 1.5  # multiplies the fitted quantiles and the worst honest value seen
CALIBRATION_REF_TOKENS = 1024  # longest output the per-output false-positive model is quoted for
CALIBRATION_EPOCH_FPR = 1e-3  # honest executor flagged per epoch
CALIBRATION_EPOCH_SAFETY = 1.05  # measured: honest T stays below mu·1.05 + z·kappa (held out)
CALIBRATION_MIN_INFERENCES = 20  # checked inferences before epoch evidence can flag anyone
CALIBRATION_TRIM = 0.3  # evidence weight trimmed from each end (a coalition below moves nothing)
CALIBRATION_TAIL_QUANTILE = 0.99  # per-token |δ| tail: exponential above this quantile
CALIBRATE_MAX_PROMPT_TOKENS = 1024  # the calibrate tool skips longer prompts
# the calibrate tool's first-pass replay tolerance per dtype (it reruns at the fitted gate)
CALIBRATE_FIRST_TOLERANCE = {"float32": CALIBRATION_MIN_GATE, "bfloat16": 1.6, "float16": 1.6}

# --- engines -------------------------------------------------------------------------------
DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny-llama"
ENGINE_MAX_BATCH_SIZE = 8  # concurrent sequences per engine step (transformers engine)
SAMPLER_SORT_HEAD = 256  # sorted prefix tried before a full sort of the vocabulary (top-k/top-p)
# vLLM fallback scoring: prompt logprobs per position (vLLM's max_logprobs).
# NOTE: on SmolLM2 that decides only ~50-56% of positions at T=0.8/top_p=0.95 and T=1 (the
# in-worker replay: all of them)
VLLM_SCORE_CANDIDATES = 1024
VLLM_REPLAY_PASS_ELEMENTS = 1 << 22  # rows per replay pass x vocabulary: bounds [rows, V] scratch

# --- metrics -------------------------------------------------------------------------------
# histogram buckets of every latency metric (Ray's Histogram wants a sorted list)
LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]


@dataclass(frozen=True)
class EnvVar:
    """One ``GONKA_*`` variable: its parser, default and meaning."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be one of 1/0, true/false, yes/no, on/off")


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gonka_ray"


ENV_VARS: dict[str, EnvVar] = {
    v.name: v
    for v in [
        EnvVar("GONKA_CACHE_DIR", Path, None, "converted models and other caches"),
        EnvVar("GONKA_LOG_LEVEL", _log_level, "INFO", "logging level"),
        EnvVar("GONKA_TORCH_THREADS", _non_negative_int, 0, "torch threads per engine, 0 = auto"),
        EnvVar("GONKA_MAX_BATCH_SIZE", _positive_int, ENGINE_MAX_BATCH_SIZE, "engine batch size"),
        EnvVar("GONKA_NAMESPACE", str, "gonka_ray", "Ray namespace of the network's actors"),
        EnvVar("GONKA_SKIP_VLLM", _bool, False, "skip vLLM tests even when vllm imports"),
        EnvVar(
            "GONKA_LOOPBACK",
            _bool,
            True,
            "drivers joining a running Ray bind 127.0.0.1 (one host); 0 on a multi-host cluster",
        ),
    ]
}


def env(name: str) -> Any:
    """Return the parsed value of ``GONKA_*`` variable ``name`` (its default when unset).

    Raises:
        ConfigError: the variable is set to a value its parser rejects, or is undeclared.
    """
    spec = ENV_VARS.get(name)
    if spec is None:
        raise ConfigError(f"{name} is not a declared GONKA_* variable", field=name)
    raw = os.environ.get(name)
    if raw is None:
        return spec.default
    try:
        return spec.parse(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}={raw!r} is invalid: {exc}", field=name) from None


def cache_dir() -> Path:
    """The cache directory (``GONKA_CACHE_DIR`` or ``~/.cache/gonka_ray``), created if missing."""
    path = env("GONKA_CACHE_DIR") or _default_cache_dir()
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
