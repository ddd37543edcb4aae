"""Crypto and wire throughput: sign, verify, encode, decode and envelope open, ops/s.

Run: ``.venv/bin/python benchmarks/crypto_wire.py`` (writes ``results/crypto_wire.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm

from benchmarks._common import print_table, write_results
from gonka_ray import crypto, wire


def ops_per_s(fn: Callable[[], object], min_time_s: float) -> float:
    """Best of 3 timed runs, each at least ``min_time_s`` long."""
    n = 1
    while True:  # calibrate a batch size taking ~10 ms
        t = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t > 0.01:
            break
        n *= 2
    best = 0.0
    for _ in range(3):
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < min_time_s:
            for _ in range(n):
                fn()
            count += n
        best = max(best, count / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--min-time-s", type=float, default=0.5)
    args = parser.parse_args()

    key = crypto.KeyPair.from_seed("bench")
    msg = wire.InferenceRequest(
        model="smollm2-135m-instruct",
        messages=(wire.ChatMessage("user", "Explain Byzantine fault tolerance in one paragraph."),),
        prompt=None,
        sampling=wire.SamplingSpec(0.7, 0.95, 0, 128, 1234, 5, ()),
        timestamp_ms=1_700_000_000_000,
        nonce=1,
        max_escrow=10_000,
    )
    data = wire.encode(msg)
    env = wire.seal(msg, key, "bench")
    payload = b"x" * 200
    sig = key.sign(b"bench", payload)
    cases: dict[str, Callable[[], object]] = {
        "sign": lambda: key.sign(b"bench", payload),
        "verify": lambda: crypto.verify(key.public_key, b"bench", payload, sig),
        "encode": lambda: wire.encode(msg),
        "decode": lambda: wire.decode(data),
        "seal": lambda: wire.seal(msg, key, "bench"),
        "open_envelope": lambda: wire.open_envelope(env, chain="bench"),
    }
    rows = []
    for name, fn in tqdm(cases.items(), desc="crypto_wire"):
        rows.append({"op": name, "ops_per_s": ops_per_s(fn, args.min_time_s)})
    rows_by = {r["op"]: r["ops_per_s"] for r in rows}
    print_table(rows)
    summary = {
        "sign_ops_per_s": round(rows_by["sign"]),
        "verify_ops_per_s": round(rows_by["verify"]),
        "encode_ops_per_s": round(rows_by["encode"]),
        "decode_ops_per_s": round(rows_by["decode"]),
        "seal_ops_per_s": round(rows_by["seal"]),
        "open_envelope_ops_per_s": round(rows_by["open_envelope"]),
    }
    path = write_results(
        "crypto_wire", summary, rows=rows, message_bytes=len(data), envelope_bytes=len(env)
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
