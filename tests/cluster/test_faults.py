"""Crash faults under load, short version of ``benchmarks/faults.py`` (FakeEngine, protocol only).

A bounded closed loop of signed requests runs while, in turn, an executor, a transport agent, a
verifier, the ledger leader and an MLNode are killed, each with work in flight (asserted; Ray
restarts each). Nothing answered may be missing from the ledger, every cut stream is billed or
refunded by the rules whatever its status, balances add up, every killed actor comes back and
works. Then a burst at one TA with a lowered in-flight limit is refused with Overloaded instead
of piling up, and oversized HTTP bodies are refused without being buffered.
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.faults import FAULTS, fault_config, fault_summary, scenario
from gonka_ray.network import launch


# NOTE: ~2.5 min on a quiet 2-core machine (each restart ~7-15 s). Under heavy outside load
# (load average 30+) restarts took minutes and the 180 s restart check failed.
@pytest.mark.timeout(900)
def test_crash_faults_under_load_lose_nothing_and_back_pressure_refuses(ray_session) -> None:
    net = launch(fault_config("faulttest", expiry_blocks=200), namespace="gonka_ray_tests")
    try:
        r = asyncio.run(
            scenario(
                net,
                requests=120,
                concurrency=8,
                bursts=(40,),
                ta_limit=8,
                oversized=(6, 16),
                fault_timeout_s=180.0,
                settle_timeout_s=180.0,
            )
        )
    finally:
        net.teardown()
    faults = {f["fault"]: f for f in r["faults"]}
    assert list(faults) == list(FAULTS) and not any("skipped" in f for f in faults.values()), r
    # every fault hit work in flight: a kill of an idle actor would prove nothing
    hit = fault_summary(r["faults"])
    assert hit["roles_killed"] == len(FAULTS) and hit["in_flight_at_kill_min"] >= 1, hit
    # every fault's actor came back
    assert all(f["restart_s"] is not None for f in faults.values()), {
        k: f["restart_s"] for k, f in faults.items()
    }
    assert faults["executor"]["mid_stream_at_kill"]
    assert faults["executor"]["payload_served_after_restart"] is True
    assert faults["verifier"]["checks_resumed_after_restart"]
    assert faults["ledger"]["caught_up"] and faults["ledger"]["recovered_height"] > 0
    when = {k: (f.get("t_kill"), f["restart_s"]) for k, f in faults.items()}
    assert r["after_restart"]["ta"] > 0 and r["after_restart"]["executor"] > 0, (
        r["after_restart"],
        when,
        r["load_s"],
        r["participants_at_end"],
        r["invalidated"],
    )
    # every participant is honest: none of their work is invalidated (a payload out of reach
    # while its executor or peer link restarts is asked for again, not failed; a lone
    # accusation nobody else voted on in time lapses)
    assert r["invalidated"] == [], (r["invalidated"], r["payload_fetches_deferred"])
    # nothing lost, the books balance on every replica, and they agree
    assert r["ledger_settled"] and r["lost_records"] == 0, (
        r["lost"],
        r["finish_refusals"],
        r["finishes_resent"],
        r["unpaid_answers"],
        when,
    )
    assert r["balances_conserved"] and r["replicas_agree"], r["books"]
    # every request got an answer in the end (a client resends a failed one as a new request)
    assert r["answered"] == r["requests"] >= 120, r["errors_by_cause"]
    # streams cut mid-way ended typed and were refunded in full
    cut = [x for x in r["refunds"] if x["tokens_sent"] > 0]
    assert all(x["error"] == "StreamInterrupted" for x in cut if x["status"] == "expired"), cut
    assert r["mid_stream_refunded"] == sum(x["status"] == "expired" for x in cut)
    assert all(x["billed_by_rules"] for x in cut), cut  # whatever the status
    # oversized bodies: refused from the headers, never buffered whole
    big = r["oversized"]
    assert big["outcomes"] == {"401": 2, "413": 4}, big
    assert big["answered_before_body"] == 6, big
    assert big["peak_mib"] <= 32, big
    # back-pressure: the overflow is refused at once with Retry-After, never queued
    (burst,) = r["bursts"]
    assert burst["outcomes"].get("Overloaded", 0) > 0 and burst["retry_after_s"] == [1.0]
    assert set(burst["outcomes"]) <= {"answered", "Overloaded"}, burst
    assert burst["ta_inflight_peak"] <= 8
