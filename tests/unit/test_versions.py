"""Protocol versions: a genesis names its rules and scheduled upgrades; a replica replaying old
blocks applies the rules they were written under; unknown versions refuse to start."""

from __future__ import annotations

import hashlib

import pytest

from gonka_ray import crypto, wire
from gonka_ray.constants import PROTOCOL_VERSION
from gonka_ray.exceptions import BadSignature, ConfigError, TxRejected
from gonka_ray.ledger.state import StateMachine
from gonka_ray.protocol import selection, versions
from gonka_ray.protocol.lifecycle import InferenceBook, InferenceStatus, ParticipantRecord
from tests.unit.test_lifecycle import CLIENT, DictAccounts, finish, start

WEIGHTS = {"p0": 100, "p1": 100, "p2": 100, "p3": 100}
UPGRADE_AT = 50


def genesis(version: int = 1, upgrades=((2, UPGRADE_AT),)) -> wire.LedgerGenesis:
    key = crypto.KeyPair.from_seed("versions-p0")
    return wire.LedgerGenesis(
        chain_id="versions",
        accounts=(),
        participants=(wire.GenesisParticipant(key.public_key, "p0", 100),),
        protocol_version=version,
        upgrades=tuple(wire.ProtocolUpgrade(v, h) for v, h in upgrades),
    )


def test_a_new_genesis_runs_the_current_rules_and_round_trips_its_schedule() -> None:
    g = wire.LedgerGenesis(chain_id="fresh", accounts=(), participants=())
    assert g.protocol_version == PROTOCOL_VERSION and g.upgrades == ()
    assert StateMachine(g).chain.rules_at(10**9) == versions.RULES[PROTOCOL_VERSION]
    again = wire.decode(wire.encode(genesis()), wire.LedgerGenesis)
    sched = versions.schedule_of(again)
    assert sched.rules_at(0).version == 1 and sched.rules_at(UPGRADE_AT - 1).version == 1
    assert sched.rules_at(UPGRADE_AT).version == 2 and sched.rules_at(10**9).version == 2


@pytest.mark.parametrize(
    "version, upgrades",
    [(99, ()), (1, ((99, 10),)), (2, ((1, 10),)), (1, ((2, 0),)), (1, ((2, 10), (2, 20)))],
)
def test_a_replica_refuses_a_schedule_it_cannot_apply(version, upgrades) -> None:
    # unknown versions (a release that does not know them would diverge), and upgrades that do
    # not raise the version at strictly increasing heights above 0
    with pytest.raises(ConfigError):
        StateMachine(genesis(version, upgrades))


def _retry_where_the_rules_differ() -> tuple[bytes, str, str]:
    """An inference id whose attempt-1 executor differs between version 1 (with replacement)
    and version 2 (without), and both executors."""
    for i in range(1_000):
        iid = hashlib.sha256(b"versions-%d" % i).digest()
        v1 = selection.select_executor(iid, 1, WEIGHTS, {"p0"}, without_replacement=False)
        v2 = selection.select_executor(iid, 1, WEIGHTS, {"p0"}, without_replacement=True)
        if v1 != v2:
            return iid, v1, v2
    raise AssertionError("no inference id where the two rules differ")


def _start(book: InferenceBook, iid: bytes, executor: str, height: int):
    return start(book, attempt=1, height=height, inference_id=iid, executor=executor)


def test_a_retry_is_judged_by_the_rules_of_its_blocks_height() -> None:
    iid, v1_draw, v2_draw = _retry_where_the_rules_differ()

    def book() -> InferenceBook:
        parts = {a: ParticipantRecord(a, w) for a, w in WEIGHTS.items()}
        rules_at = versions.schedule_of(genesis()).rules_at
        return InferenceBook(
            DictAccounts({CLIENT: 10**6}), parts, expiry_blocks=10, rules_at=rules_at
        )

    # a block written before the upgrade: version 1's draw is the valid one
    assert _start(book(), iid, v1_draw, UPGRADE_AT - 1).executor == v1_draw
    with pytest.raises(TxRejected) as err:
        _start(book(), iid, v2_draw, UPGRADE_AT - 1)
    assert err.value.reason == "wrong_executor"
    # from the activation height on, version 2's
    assert _start(book(), iid, v2_draw, UPGRADE_AT).executor == v2_draw
    with pytest.raises(TxRejected) as err:
        _start(book(), iid, v1_draw, UPGRADE_AT)
    assert err.value.reason == "wrong_executor"


def test_a_prompt_count_mismatch_opens_a_vote_only_from_version_3() -> None:
    # a replica replaying a version-2 block must not open the vote that version 3 opens
    g = genesis(2, ((3, UPGRADE_AT),))

    def finish_mismatched(height: int):
        parts = {a: ParticipantRecord(a, w) for a, w in WEIGHTS.items()}
        book = InferenceBook(
            DictAccounts({CLIENT: 10**6}),
            parts,
            expiry_blocks=10,
            rules_at=versions.schedule_of(g).rules_at,
        )
        rec = start(book, height=height, prompt_tokens=40)  # the TA claims 40
        return finish(book, rec, height=height + 1, prompt_tokens=10)  # the executor ran 10

    before = finish_mismatched(UPGRADE_AT - 5)
    assert before.status is InferenceStatus.FINISHED and not before.prompt_vote
    after = finish_mismatched(UPGRADE_AT)
    assert after.status is InferenceStatus.VOTING and after.prompt_vote and after.accuser == "p0"
    assert before.prompt_tokens == after.prompt_tokens == 10  # both charge the executor's count


def test_every_replica_takes_the_rule_parameters_from_the_genesis_not_its_own_config() -> None:
    from dataclasses import replace

    from gonka_ray.actors.epoch_worker import PocSettings
    from gonka_ray.actors.spec import ParticipantSpec
    from gonka_ray.demo import demo_network_config
    from gonka_ray.network import build_genesis

    config = demo_network_config(model="fake", cheat=None, engine="fake")
    genesis = build_genesis(config)
    p = genesis.params
    assert (p.expiry_blocks, p.price_per_token, p.epoch_blocks) == (
        config.ledger.expiry_blocks,
        config.pricing.price_per_token,
        config.epoch.epoch_blocks,
    )
    # a spec holds no copy of the rule parameters that could disagree with its genesis: only
    # its local settings (how long its PoC sprint may compute)
    spec = ParticipantSpec(
        network="n",
        namespace="ns",
        name="p0",
        index=0,
        key_seed=b"",
        genesis=wire.encode(genesis),
        model="fake",
        storage_dir="/nonexistent",
        poc=PocSettings(max_budget_s=config.epoch.poc_budget_s + 1),
    )
    app, epochs = spec.app_config, spec.epoch_app_config.epoch
    assert (app.price_per_token, app.expiry_blocks, app.vote_blocks) == (
        p.price_per_token,
        p.expiry_blocks,
        p.vote_blocks,
    )
    assert (epochs.epoch_blocks, epochs.epochs_to_max_reputation) == (
        p.epoch_blocks,
        p.epochs_to_max_reputation,
    )
    assert epochs.poc_budget_s == config.epoch.poc_budget_s + 1  # local: how long it computes
    # a genesis without them gives a participant nothing to run by
    bare = replace(spec, genesis=wire.encode(replace(genesis, params=None)))
    with pytest.raises(ConfigError, match="rule parameters"):
        _ = bare.app_config


def test_two_networks_of_one_name_but_another_genesis_sign_for_different_chains() -> None:
    """A test network named like a live one must not accept the live one's signatures (a
    client's request replayed there, or the reverse): the chain id carries the genesis digest."""
    from gonka_ray.demo import demo_network_config
    from gonka_ray.network import build_genesis, chain_id, client_key

    live = demo_network_config(model="fake", cheat=None, engine="fake")
    test = live.model_copy(update={"ledger": live.ledger.model_copy(update={"expiry_blocks": 700})})
    assert live.name == test.name
    assert chain_id(live) == chain_id(live) == build_genesis(live).chain_id  # deterministic
    assert chain_id(live).startswith(f"{live.name}-") and chain_id(live) != chain_id(test)
    request = wire.seal(
        wire.Transfer(to=client_key(live).address, amount=1, nonce=0),
        client_key(live),
        chain_id(live),
    )
    assert wire.open_envelope(request, chain=chain_id(live)).message.amount == 1
    with pytest.raises(BadSignature):
        wire.open_envelope(request, chain=chain_id(test))
