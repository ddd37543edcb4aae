"""JSON views of ledger records: what the HTTP API, the SDK and the CLI show.

Plain data in, plain data out: this module imports neither Ray nor a web framework (a unit test
checks), so the SDK and the CLI can render records without loading Ray Serve or FastAPI.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import fields
from enum import Enum
from importlib import resources
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def record_view(record: Any, names: Mapping[str, str]) -> dict[str, Any]:
    """An InferenceRecord as JSON, addresses also shown as participant names."""
    # NOTE: the sampling seed stays off the public view: with it anyone could replay (and so
    # predict or imitate) the client's sampled answer; executors and verifiers read it from
    # the signed request.
    out = {f.name: _jsonable(getattr(record, f.name)) for f in fields(record) if f.name != "seed"}
    out["id"] = out.pop("inference_id")
    out["object"] = "inference"
    for role in ("transport_agent", "executor", "accuser"):
        if out.get(role):
            out[f"{role}_name"] = names.get(out[role])
    out["validations"] = [
        {"validator": a, "validator_name": names.get(a), "passed": ok}
        for a, ok in record.validations.items()
    ]
    out["votes"] = [
        {"voter": a, "voter_name": names.get(a), "valid": ok} for a, ok in record.votes.items()
    ]
    out["refund"] = record.refunded
    return out


def explorer_view(
    *,
    network: str,
    model: str,
    height: int,
    infos: Mapping[str, Any],
    records: list[Any],
    epoch: Mapping[str, Any] | None,
    ledger_epoch: Any | None = None,
) -> dict[str, Any]:
    """The explorer's JSON from ledger answers (plain data; no Ray).

    Args:
        infos: address -> ``ParticipantInfo`` (the replica's ``participants()``).
        records: recent ``InferenceRecord``s, newest first.
        epoch: the network's epoch config as a dict, or None.
        ledger_epoch: the replica's ``EpochView`` when its ledger tracks epochs: epoch, phase
            and this epoch's weights come from it; otherwise epoch and phase are computed
            from ``height`` and ``epoch`` (:func:`gonka_ray.protocol.epochs.position`), and
            omitted when both are None.
    """
    names = {a: p.name for a, p in infos.items()}
    epoch_weights = dict(getattr(ledger_epoch, "weights", None) or {})
    parts = []
    for p in sorted(infos.values(), key=lambda p: p.name):
        r = p.record
        parts.append(
            {
                "name": p.name,
                "address": p.address,
                "weight": epoch_weights.get(p.address, p.weight),
                "reputation": p.reputation,
                "status": p.status,
                "served": r.served,
                "validations_done": r.validations_done,
                "checked": r.checked,
                "failed": r.failed,
                "invalidated_total": r.invalidated_total,
                "false_accusations": r.false_accusations,
                "pending_fees": r.pending_fees,
            }
        )
    recent = [
        {
            "id": rec.inference_id.hex(),
            "status": _jsonable(rec.status),
            "transport_agent": names.get(rec.transport_agent),
            "executor": names.get(rec.executor),
            "prompt_tokens": rec.prompt_tokens,
            "completion_tokens": rec.completion_tokens,
            "cost": rec.cost,
            "refund": rec.refunded,
            "validations": len(rec.validations),
            "validations_passed": sum(1 for ok in rec.validations.values() if ok),
            "votes": len(rec.votes),
            "start_height": rec.start_height,
        }
        for rec in records
    ]
    pos = None
    if epoch is not None:
        from gonka_ray.config import EpochConfig
        from gonka_ray.protocol.epochs import position

        cfg = EpochConfig(**epoch)
        at = position(height, cfg)
        pos = {
            "epoch": at.epoch,
            "phase": at.phase.value,
            "offset": at.offset,
            "epoch_blocks": cfg.epoch_blocks,
            "epoch_start": at.epoch_start,
            "epoch_end": at.epoch_end,
            "phase_end": at.phase_end,
            "source": "config",
        }
    if ledger_epoch is not None:
        # NOTE: the ledger's view describes height + 1 (where a transaction sent now lands).
        blocks = pos["epoch_blocks"] if pos else None
        start = ledger_epoch.epoch_end - blocks if blocks else None
        pos = {
            "epoch": ledger_epoch.epoch,
            "phase": str(ledger_epoch.phase),
            "offset": height + 1 - start if start is not None else 0,
            "epoch_blocks": blocks,
            "epoch_start": start,
            "epoch_end": ledger_epoch.epoch_end,
            "phase_end": ledger_epoch.phase_end,
            "source": "ledger",
        }
    by_status: dict[str, int] = {}
    for row in recent:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    return {
        "object": "explorer",
        "network": network,
        "model": model,
        "height": height,
        "epoch": pos,
        "participants": parts,
        "inferences": recent,
        "totals": {
            # NOTE: from the participants' counters, so they cover the whole ledger, not only
            # the recent rows: served = finished inferences, validations = checks recorded.
            "inferences": sum(p["served"] for p in parts),
            "validations": sum(p["validations_done"] for p in parts),
            "invalidated": sum(p["invalidated_total"] for p in parts),
            "recent_by_status": by_status,
        },
        "time_ms": int(time.time() * 1000),
    }


def explorer_html() -> str:
    """The explorer page (packaged with gonka_ray; no external assets)."""
    return resources.files("gonka_ray").joinpath("static/explorer.html").read_text("utf-8")
