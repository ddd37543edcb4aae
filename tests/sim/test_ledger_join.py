"""A replica that was not in the genesis joins a running ledger over TCP: it registers as a
guest (a signed registration and endpoint, nothing else allowed), the members dial the endpoint
it announced, it follows the chain, and once an epoch's validator set names its key it votes,
enough that the chain keeps committing with a genesis replica down only thanks to it."""

from __future__ import annotations

from typing import Any

import pytest

from gonka_ray import crypto, wire
from gonka_ray.exceptions import JoinRefused, PeerCallFailed
from gonka_ray.federation import _register_on
from gonka_ray.ledger import merkle
from gonka_ray.ledger.replica import LedgerReplica
from gonka_ray.ledger.state import PARTICIPANTS, VALIDATORS, StateMachine
from gonka_ray.peer.guest import JOIN_SUBMIT, GuestLink, join_directory, serve_joiners
from gonka_ray.peer.limits import PeerLimits
from gonka_ray.peer.tcp import TcpPeerTransport
from gonka_ray.wire import PeerEndpoint, RegisterParticipant, Transfer
from tests.peer_harness import free_addresses, wait_for
from tests.sim.network import SIM_CHAIN, sim_key
from tests.sim.replicas import GENESIS, transfer

LIMITS = PeerLimits(reconnect_min_s=0.02, reconnect_max_s=0.2)
B = 8  # blocks per epoch
JOINER = sim_key("joiner")


def grant_joiner_weight(sm: StateMachine) -> None:
    """A stand-in for Proof of Compute (``epoch_app`` earns weight in the real network): once
    the joiner is registered, the next epoch's validator set gives it power 1, as settlement
    writes the set. Deterministic, so every replica applies it alike."""

    def hook(ctx) -> None:
        if ctx.get(PARTICIPANTS, JOINER.address) is not None and not ctx.get(
            VALIDATORS, JOINER.address
        ):
            ctx.put(VALIDATORS, JOINER.address, 1)

    sm.on_end_block(hook)


OPTIONS: dict[str, Any] = {
    "tick_ms": 5,
    "timeout_ticks": 40,
    "snapshot_every": 1000,
    "empty_block_interval_ms": 20,
    "epoch_blocks": B,
    "install": grant_joiner_weight,
}


def replica(i: int, key: crypto.KeyPair, t: TcpPeerTransport, tmp_path) -> LedgerReplica:
    return LedgerReplica(
        index=i,
        key_seed=key.seed,
        genesis=wire.encode(GENESIS),
        storage_dir=str(tmp_path / f"r{i}"),
        transport=t,
        **OPTIONS,
    )


async def test_a_newcomer_registers_as_a_guest_follows_and_votes_from_the_next_epoch(
    tmp_path,
) -> None:
    addresses = free_addresses(5)
    transports: list[TcpPeerTransport] = []
    reps: list[LedgerReplica] = []
    try:
        for i in range(4):
            t = TcpPeerTransport.for_genesis(
                GENESIS,
                index=i,
                key=sim_key(f"replica-{i}"),
                addresses=addresses[:4],
                limits=LIMITS,
                seed=i,
            )
            r = replica(i, sim_key(f"replica-{i}"), t, tmp_path)
            serve_joiners(t, r)
            await r.start()
            transports.append(t)
            reps.append(r)
        await reps[0].submit(transfer(1, 0))
        await wait_for(lambda: min(r.sm.height for r in reps) >= B + 2, 30, "an epoch")

        # 0. a joiner whose config gives another genesis (other rule parameters: its replica
        #    could not follow the chain) stops before it signs anything
        async with GuestLink(key=JOINER, chain_id=SIM_CHAIN, address=addresses[1]) as link:
            with pytest.raises(JoinRefused) as refused:
                await _register_on(link, JOINER, "joiner", addresses[4], b"\x00" * 32)
            assert refused.value.reason == "genesis_mismatch"
            directory, nonce, _ = await join_directory(link, JOINER.address)
            assert len(directory) == 4 and nonce == 0  # nothing registered

        # 1. as a guest: only registration transactions pass; then register and announce
        async with GuestLink(key=JOINER, chain_id=SIM_CHAIN, address=addresses[1]) as link:
            spam = wire.seal(Transfer(to=JOINER.address, amount=1, nonce=0), JOINER, SIM_CHAIN)
            with pytest.raises(PeerCallFailed) as refused:
                await link.call(JOIN_SUBMIT, spam)
            assert refused.value.reason == "not_for_guests"
            reg = wire.seal(
                RegisterParticipant(name="joiner", weight=0, nonce=0), JOINER, SIM_CHAIN
            )
            receipt = wire.decode(await link.call(JOIN_SUBMIT, reg), wire.TxReceipt)
            assert receipt.ok, receipt.reason
            ann = wire.seal(PeerEndpoint(endpoint=addresses[4], nonce=1), JOINER, SIM_CHAIN)
            assert wire.decode(await link.call(JOIN_SUBMIT, ann), wire.TxReceipt).ok
            directory, nonce, digest = await join_directory(link, JOINER.address)
        assert len(directory) == 5 and directory[4] == (JOINER.public_key, addresses[4])
        assert nonce == 2
        assert digest == wire.digest(GENESIS)  # what the joiner checks its own config against
        assert transports[1].stats.guest_sessions == 2

        # 2. the newcomer's own replica at its directory place: the members dial it
        t = TcpPeerTransport(
            index=4,
            key=JOINER,
            chain_id=SIM_CHAIN,
            peer_keys=[pk for pk, _ in directory],
            addresses=[ep or addresses[i] for i, (_, ep) in enumerate(directory)],
            limits=LIMITS,
            seed=4,
        )
        joiner = replica(4, JOINER, t, tmp_path)
        await joiner.start()
        transports.append(t)
        reps.append(joiner)
        await t.wait_connected([0, 1, 2, 3], 10.0)
        target = reps[0].core.committed_height
        await wait_for(lambda: joiner.core.committed_height >= target, 30, "the joiner to sync")
        assert await joiner.committed_hash(target) == await reps[0].committed_hash(target)

        # 3. the next epoch's set names it: it votes, and with a genesis replica down the
        # chain commits only because it does (4 of 5 powers; 3 would be no quorum)
        await wait_for(lambda: joiner.core.me is not None, 30, "an epoch with the joiner")
        assert all(r.core.vs.index_of(JOINER.public_key) is not None for r in reps)
        await reps[3].close()
        await transports[3].close()
        tx = transfer(2, 0)
        await reps[0].submit(tx)
        await joiner.wait_receipt(merkle.tx_hash(tx), timeout_s=30)
        assert joiner.core.stats.votes_sent > 0
        assert joiner.sm.balance(sim_key("client-2").address) == 1_000 - 1
    finally:
        for r in reps:
            await r.close()
        for t in transports:
            await t.close()
