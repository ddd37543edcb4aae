"""The verification artifact: what an executor publishes about each output position.

Per output position: the chosen token id, its raw-model logprob, and the top-k token ids and
logprobs (k default 5, max 20). Plus everything a verifier needs to replay the inference: the
prompt and output token ids, the request seed and sampling parameters, and the finish reason.

Encoding (DESIGN §3):
- **Canonical bytes**: a msgpack header followed by little-endian columns — prompt ids and output
  ids as uint32, token logprobs float16, top-k ids uint32 ``[N, k]``, top-k logprobs float16
  ``[N, k]``. ``artifact_hash = sha256(canonical bytes)``; the ledger stores only this hash.
- **Compact bytes** (what the payload store keeps and sends): the canonical bytes with each
  column byte-shuffled (all first bytes, then all second bytes, ...) and zlib-compressed at a
  fixed level. Token ids below 2^16 make the high byte planes zeros and the float16 exponents
  repeat, so this lands near 20 bytes per output token at k = 5 without giving up uint32 ids.
  Decoding verifies the result re-encodes to the same canonical bytes.

Logprobs are stored as float16 (rounded to nearest); checks compare within float16 resolution.
Pure: no Ray, no torch.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, replace

import msgpack
import numpy as np

from gonka_ray.constants import ARTIFACT_ZLIB_LEVEL, MAX_ARTIFACT_TOKENS, MAX_TOP_K_LOGPROBS
from gonka_ray.exceptions import MalformedMessage, OversizeField, TruncatedMessage

ARTIFACT_VERSION = 1
FINISH_REASONS = ("stop", "length", "abort")


@dataclass(frozen=True, eq=False)
class Artifact:
    """An executor's record of one inference. Arrays are read-only numpy views.

    Shapes: ``prompt_ids [P]`` uint32, ``output_ids [N]`` uint32, ``token_logprobs [N]`` float16,
    ``top_ids [N, k]`` uint32, ``top_logprobs [N, k]`` float16.
    """

    prompt_ids: np.ndarray
    output_ids: np.ndarray
    token_logprobs: np.ndarray
    top_ids: np.ndarray
    top_logprobs: np.ndarray
    seed: int
    temperature: float
    top_p: float
    top_k: int
    finish_reason: str

    @classmethod
    def build(
        cls,
        *,
        prompt_ids,
        output_ids,
        token_logprobs,
        top_ids,
        top_logprobs,
        seed: int,
        temperature: float,
        top_p: float,
        top_k: int,
        finish_reason: str,
    ) -> Artifact:
        """Validate and normalise arrays (any array-like) into an :class:`Artifact`.

        Raises:
            MalformedMessage: inconsistent shapes, bad k, unknown finish reason.
        """
        prompt = _ids(prompt_ids, "prompt_ids")
        output = _ids(output_ids, "output_ids")
        n = len(output)
        tok_lp = np.asarray(token_logprobs, dtype=np.float32).astype(np.float16).reshape(-1)
        t_ids = _ids(top_ids, "top_ids", flat=False)
        t_lp = np.asarray(top_logprobs, dtype=np.float32).astype(np.float16)
        if n == 0:
            t_ids = t_ids.reshape(0, t_ids.shape[-1] if t_ids.ndim == 2 else 0)
            t_lp = t_lp.reshape(t_ids.shape)
        if tok_lp.shape != (n,) or t_ids.ndim != 2 or t_ids.shape[0] != n:
            raise MalformedMessage("artifact arrays disagree on the number of output tokens")
        if t_lp.shape != t_ids.shape:
            raise MalformedMessage("top_ids and top_logprobs have different shapes")
        if not 0 <= t_ids.shape[1] <= MAX_TOP_K_LOGPROBS:
            raise MalformedMessage(f"top-k must be 0..{MAX_TOP_K_LOGPROBS}", field="top_k")
        if finish_reason not in FINISH_REASONS:
            raise MalformedMessage(f"unknown finish reason {finish_reason!r}", field="finish")
        if not (0 <= int(seed) < 2**64):
            raise MalformedMessage("seed must be a uint64", field="seed")
        for arr in (prompt, output, tok_lp, t_ids, t_lp):
            arr.setflags(write=False)
        return cls(
            prompt,
            output,
            tok_lp,
            t_ids,
            t_lp,
            int(seed),
            float(temperature),
            float(top_p),
            int(top_k),
            finish_reason,
        )

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[1])

    @property
    def num_output_tokens(self) -> int:
        return int(self.output_ids.shape[0])

    def canonical_bytes(self) -> bytes:
        header = msgpack.packb(
            [
                ARTIFACT_VERSION,
                len(self.prompt_ids),
                self.num_output_tokens,
                self.k,
                self.seed,
                self.temperature,
                self.top_p,
                self.top_k,
                self.finish_reason,
            ],
            use_bin_type=True,
        )
        return header + b"".join(_le(c).tobytes() for c in self._columns())

    def hash(self) -> bytes:
        """SHA-256 of the canonical bytes (what the ledger records)."""
        return hashlib.sha256(self.canonical_bytes()).digest()

    def to_compact(self) -> bytes:
        """Byte-shuffled, zlib-compressed encoding (see module docstring)."""
        header_len_prefix = self.canonical_bytes()[: self._header_len()]
        planes = b"".join(_shuffle(_le(c)) for c in self._columns())
        return header_len_prefix + zlib.compress(planes, ARTIFACT_ZLIB_LEVEL)

    @classmethod
    def from_compact(cls, data: bytes) -> Artifact:
        """Decode :meth:`to_compact` output.

        Raises:
            TruncatedMessage / MalformedMessage / OversizeField: on any bad input.
        """
        header, offset = _read_header(data)
        _version, p, n, k, seed, temperature, top_p, top_k, finish = header
        try:
            # NOTE: bound decompression by the declared size: a zip bomb stops at the limit.
            expected = 4 * p + 4 * n + 2 * n + 6 * n * k
            d = zlib.decompressobj()
            planes = d.decompress(bytes(data[offset:]), expected + 1)
            if len(planes) != expected or d.unconsumed_tail or not d.eof or d.unused_data:
                raise MalformedMessage("artifact body does not match its header")
        except zlib.error:
            raise MalformedMessage("artifact body is not valid zlib") from None
        cols, pos = [], 0
        for dtype, count, shape in (
            (np.uint32, p, (p,)),
            (np.uint32, n, (n,)),
            (np.float16, n, (n,)),
            (np.uint32, n * k, (n, k)),
            (np.float16, n * k, (n, k)),
        ):
            size = np.dtype(dtype).itemsize * count
            cols.append(_unshuffle(planes[pos : pos + size], dtype).reshape(shape))
            pos += size
        art = cls.build(
            prompt_ids=cols[0],
            output_ids=cols[1],
            token_logprobs=cols[2],
            top_ids=cols[3],
            top_logprobs=cols[4],
            seed=seed,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            finish_reason=finish,
        )
        if art.to_compact() != bytes(data):
            raise MalformedMessage("artifact is not canonically encoded")
        return art

    def bytes_per_token(self, *, include_prompt: bool = False) -> float:
        """Compact size per output token. By default the prompt ids are left out: they cost once
        per request (their size follows the prompt, not the output), the per-token columns cost
        per generated token."""
        art = self
        if not include_prompt:
            empty = np.zeros(0, np.uint32)
            empty.setflags(write=False)
            art = replace(self, prompt_ids=empty)
        return len(art.to_compact()) / max(1, self.num_output_tokens)

    def _columns(self) -> tuple[np.ndarray, ...]:
        return (
            self.prompt_ids,
            self.output_ids,
            self.token_logprobs,
            self.top_ids,
            self.top_logprobs,
        )

    def _header_len(self) -> int:
        return _read_header(self.canonical_bytes())[1]


def _ids(values, name: str, flat: bool = True) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= 2**32):
        raise MalformedMessage(f"{name} must be token ids in [0, 2^32)", field=name)
    arr = arr.astype(np.uint32)
    return arr.reshape(-1) if flat else arr


def _le(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))


def _shuffle(arr: np.ndarray) -> bytes:
    raw = np.frombuffer(arr.tobytes(), dtype=np.uint8).reshape(-1, arr.dtype.itemsize)
    return raw.T.tobytes()


def _unshuffle(data: bytes, dtype) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    planes = np.frombuffer(data, dtype=np.uint8).reshape(itemsize, -1)
    return np.frombuffer(planes.T.tobytes(), dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)


def _read_header(data: bytes) -> tuple[list, int]:
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
        raise TruncatedMessage("empty artifact")
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(data))
    unpacker.feed(bytes(data[:4096]))
    try:
        header = unpacker.unpack()
    except msgpack.OutOfData:
        raise TruncatedMessage("artifact header ends early") from None
    except Exception as exc:
        raise MalformedMessage(f"artifact header is not msgpack: {type(exc).__name__}") from None
    if (
        type(header) is not list
        or len(header) != 9
        or header[0] != ARTIFACT_VERSION
        or not all(type(v) is int and v >= 0 for v in header[1:5])
        or not all(type(v) is float for v in header[5:7])
        or type(header[7]) is not int
        or type(header[8]) is not str
    ):
        raise MalformedMessage("bad artifact header")
    if header[2] > MAX_ARTIFACT_TOKENS or header[1] > MAX_ARTIFACT_TOKENS or header[3] > 20:
        raise OversizeField("artifact too large")
    return header, unpacker.tell()
