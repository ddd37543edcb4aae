"""Consensus scenarios as scripts: a tiny interpreter over :class:`SimNetwork`.

A scenario file (``tests/sim/scenarios/*.scenario``) is one command per line; ``#`` starts a
comment. Modelled on etcd-io/raft's data-driven tests: a scenario reads like the story it tells,
and a failing line is reported with its file and line number.

Commands::

    reconfigure at=H powers=I:P,...      before `network`: at height H write these powers
    network seed=S [n=4] [byzantine=I:mode,...] [drop=F] [duplicate=F] [max_delay=T]
            [timeout_ticks=T] [empty_block_ticks=T] [epoch_blocks=B] [max_block_txs=N]
                                         modes: tests.sim.byzantine.BYZANTINE_MODES; `I:twins`
                                         gives replica I a twin at location n (the next twin
                                         at n + 1, ...)
    partition 0,1,2 | 3                  cut every link between the groups (of locations:
                                         replica I is at I, twins as above)
    heal                                 remove the partition
    set drop=F [duplicate=F]             change link faults from now on
    submit count=N [seed=S] to=I,... [each=all|round-robin] [run=T]
                                         N generated transfers to these replicas, running T
                                         ticks after each; every one is expected to commit
    run ticks=T                          advance the clock
    run-until all-committed within=T     fail unless every submitted tx commits on every
                                         honest replica within T ticks
    run-until METRIC OP VALUE within=T   fail unless the comparison holds within T ticks
    expect METRIC OP VALUE               fail unless the comparison holds now
    expect safe                          no honest replicas disagree at any height
    expect same-prefix I J               replicas I and J both committed and agree up to the
                                         shorter of their chains
    expect not-validator I               replica I's key is out of replica 0's current set

METRIC is ``height I`` (blocks committed by replica I), ``epoch I``, ``validators I`` (size of
I's current validator set), ``proposals I`` (proposals I made; for a twinned I, the sum over
both twins), ``rejected`` (messages the honest replicas rejected), or ``attack NAME`` (what the
adversary did, one of :data:`tests.sim.byzantine.COUNTERS`: e.g. ``conflicting_proposals``,
validly signed conflicting blocks of one view that honest replicas received); VALUE is an
integer or another METRIC; OP is one of ``== != >= <= > <``.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gonka_ray.ledger import merkle
from tests.sim.byzantine import COUNTERS
from tests.sim.network import SimNetwork, scenario_txs, sim_key

OPS: dict[str, Callable[[int, int], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
INT_OPTIONS = ("n", "max_delay", "timeout_ticks", "empty_block_ticks", "epoch_blocks")
INT_OPTIONS += ("max_block_txs", "min_block_ticks")
FLOAT_OPTIONS = ("drop", "duplicate")


class ScenarioFailed(AssertionError):
    """A scenario line did not hold; the message names the file and line."""


@dataclass
class Scenario:
    """Runs one scenario script; ``net`` is the network once ``network`` has built it."""

    name: str
    net: SimNetwork | None = None
    reconfigure: dict[int, dict[int, int]] = field(default_factory=dict)
    wanted: set[bytes] = field(default_factory=set)
    submitted: int = 0

    @classmethod
    def run_file(cls, path: Path) -> Scenario:
        scenario = cls(path.name)
        scenario.run_text(path.read_text())
        return scenario

    def run_text(self, text: str) -> None:
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                self.step(line)
            except ScenarioFailed as e:
                raise ScenarioFailed(f"{self.name}:{number}: {line!r}: {e}") from None
            except (ValueError, KeyError, IndexError) as e:
                raise ValueError(f"{self.name}:{number}: bad line {line!r}: {e}") from e

    # --- commands ---------------------------------------------------------------------------

    def step(self, line: str) -> None:
        command, _, rest = line.partition(" ")
        words = rest.split()
        if command == "reconfigure":
            kv = _options(words)
            self.reconfigure[int(kv["at"])] = _index_map(kv["powers"])
        elif command == "network":
            self._build(_options(words))
        elif command == "partition":
            groups = [set(map(int, g.split(","))) for g in rest.replace(" ", "").split("|")]
            self._net.set_partition(groups)
        elif command == "heal":
            self._net.set_partition(None)
        elif command == "set":
            for key, value in _options(words).items():
                if key not in FLOAT_OPTIONS:
                    raise ValueError(f"cannot set {key}")
                setattr(self._net, key, float(value))
        elif command == "submit":
            self._submit(_options(words))
        elif command == "run":
            self._net.run(int(_options(words)["ticks"]))
        elif command == "run-until":
            self._run_until(words)
        elif command == "expect":
            self._expect(words)
        else:
            raise ValueError(f"unknown command {command!r}")

    @property
    def _net(self) -> SimNetwork:
        if self.net is None:
            raise ValueError("no network yet: the scenario needs a `network` line first")
        return self.net

    def _build(self, kv: dict[str, str]) -> None:
        options: dict[str, object] = {}
        for key, value in kv.items():
            if key in INT_OPTIONS:
                options[key] = int(value)
            elif key in FLOAT_OPTIONS:
                options[key] = float(value)
            elif key == "byzantine":
                options[key] = {int(i): mode for i, mode in _pairs(value)}
            elif key != "seed":
                raise ValueError(f"unknown network option {key}")
        self.net = SimNetwork(
            int(kv["seed"]),
            reconfigure=self.reconfigure or None,
            **options,  # type: ignore[arg-type]
        )

    def _submit(self, kv: dict[str, str]) -> None:
        net = self._net
        seed = int(kv.get("seed", net.seed * 1000 + self.submitted))
        targets = [int(i) for i in kv["to"].split(",")]
        each, ticks = kv.get("each", "round-robin"), int(kv.get("run", "0"))
        batch = scenario_txs(random.Random(seed), int(kv["count"]))
        for i, tx in enumerate(batch):
            for target in targets if each == "all" else [targets[i % len(targets)]]:
                net.submit(target, tx)
            net.run(ticks)
        self.wanted |= {merkle.tx_hash(tx) for tx in batch}
        self.submitted += 1

    def _run_until(self, words: list[str]) -> None:
        *condition, within = words
        ticks = int(_options([within])["within"])
        if condition == ["all-committed"]:
            if not self._net.run_until(lambda: self._net.all_committed(self.wanted), ticks):
                missing = [
                    nd.index for nd in self._net.honest if not self.wanted <= nd.committed_txs
                ]
                raise ScenarioFailed(f"replicas {missing} miss transactions after {ticks} ticks")
            return
        check = self._comparison(condition)
        if not self._net.run_until(lambda: check()[0], ticks):
            raise ScenarioFailed(f"{check()[1]} after {ticks} ticks")

    def _expect(self, words: list[str]) -> None:
        net = self._net
        if words == ["safe"]:
            problems = net.safety_violations()
            if problems:
                raise ScenarioFailed("; ".join(problems))
        elif words[0] == "same-prefix":
            a, b = (net.nodes[int(w)].commits for w in words[1:3])
            shorter = min(len(a), len(b))
            if shorter == 0 or a[:shorter] != b[:shorter]:
                raise ScenarioFailed(f"chains differ or are empty (heights {len(a)}, {len(b)})")
        elif words[0] == "not-validator":
            key = sim_key(f"replica-{int(words[1])}").public_key
            core = net.honest[0].core
            assert core is not None
            if core.vs.index_of(key) is not None:
                raise ScenarioFailed(f"replica {words[1]} is still a validator")
        else:
            held, message = self._comparison(words)()
            if not held:
                raise ScenarioFailed(message)

    # --- metrics ----------------------------------------------------------------------------

    def _comparison(self, words: list[str]) -> Callable[[], tuple[bool, str]]:
        left, rest = self._metric(words)
        op, rest = rest[0], rest[1:]
        if op not in OPS:
            raise ValueError(f"unknown operator {op!r}")
        if len(rest) == 1 and rest[0].lstrip("-").isdigit():
            value = int(rest[0])
            right: Callable[[], int] = lambda: value  # noqa: E731
        else:
            right, tail = self._metric(rest)
            if tail:
                raise ValueError(f"trailing words {tail}")

        def check() -> tuple[bool, str]:
            lhs, rhs = left(), right()
            return OPS[op](lhs, rhs), f"{' '.join(words)}: got {lhs} {op} {rhs}"

        return check

    def _metric(self, words: list[str]) -> tuple[Callable[[], int], list[str]]:
        net = self._net
        name = words[0]
        if name == "rejected":
            return lambda: sum(nd.core.stats.rejected for nd in net.honest if nd.core), words[1:]
        if name == "attack":
            counter = words[1]
            if counter not in COUNTERS:
                raise ValueError(f"unknown attack counter {counter!r}; one of {COUNTERS}")
            return lambda: net.adversary.counts[counter], words[2:]
        node = net.nodes[int(words[1])]
        same = [nd for nd in net.located if nd.index == node.index]  # a replica and its twin
        getters: dict[str, Callable[[], int]] = {
            "height": lambda: len(node.commits),
            "epoch": lambda: node.core.epoch if node.core else -1,
            "validators": lambda: len(node.core.vs) if node.core else 0,
            "proposals": lambda: sum(nd.core.stats.proposals for nd in same if nd.core),
        }
        return getters[name], words[2:]


def _options(words: list[str]) -> dict[str, str]:
    out = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, got {word!r}")
        out[key] = value
    return out


def _pairs(text: str) -> list[tuple[str, str]]:
    return [tuple(item.split(":", 1)) for item in text.split(",")]  # type: ignore[misc]


def _index_map(text: str) -> dict[int, int]:
    return {int(k): int(v) for k, v in _pairs(text)}
