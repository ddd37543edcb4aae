"""Synthetic user traffic for calibrating and measuring verification: prompts and sampling params.

Real traffic is what the thresholds must hold for (the OpenAI defaults — temperature 1.0, short
answers — long prompts, stop strings, every sampling option), so calibration and the detection
benchmark draw requests from the grid below instead of one benchmark setting:

- temperature ``TEMPERATURES``, top-p ``TOP_PS``, top-k ``TOP_KS``, drawn independently;
- ``max_tokens`` from ``LENGTHS`` (weighted towards short answers, as chat traffic is);
- prompts of five sizes, from one word to near the context (``PROMPT_SIZES``), some with a system
  message, some with stop strings.

Two **disjoint splits**: ``"calibration"`` and ``"heldout"`` use different topic and word lists
and different seed streams, so a threshold fitted on one is judged on prompts and seeds it never
saw. Everything is a pure function of ``(split, index, seed)``: the same call returns the same
requests on every machine. No torch, no tokenizer (prompt sizes are in words; the harness turns
them into token ids and trims the longest to the context).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TEMPERATURES = (0.0, 0.3, 0.7, 1.0, 1.5, 2.0)
TOP_PS = (1.0, 0.9, 0.5)
TOP_KS = (0, 40)
LENGTHS = (1, 2, 4, 16, 64, 256, 1024)
LENGTH_WEIGHTS = (15, 12, 18, 22, 23, 8, 2)  # share of requests per max_tokens, in percent
# prompt size classes: (name, words, weight %)
PROMPT_SIZES = (
    ("word", 1, 20),
    ("sentence", 12, 40),
    ("paragraph", 90, 25),
    ("long", 600, 10),
    ("near_context", 1250, 5),  # ~1,900 SmolLM2 tokens: a 2,048 context
)
STOP_SHARE = 0.15  # requests carrying stop strings
SYSTEM_SHARE = 0.2  # requests with a system message
SPLITS = ("calibration", "heldout")

_TOPICS = {
    "calibration": (
        "the sea",
        "bicycles",
        "Python",
        "the sky",
        "dragons",
        "tea",
        "machine learning",
        "airplanes",
        "volcanoes",
        "bread",
        "chess",
        "rainforests",
        "the moon",
        "jazz",
        "gardening",
        "trains",
        "bees",
        "glaciers",
        "coffee",
        "robots",
        "the Roman empire",
        "electricity",
        "whales",
        "mountains",
        "soap",
        "libraries",
        "owls",
        "deserts",
        "photography",
        "the heart",
        "magnets",
        "castles",
        "clouds",
        "cheese",
        "rivers",
        "submarines",
        "tigers",
        "the internet",
        "painting",
        "earthquakes",
    ),
    "heldout": (
        "weather",
        "bridges",
        "tomatoes",
        "penguins",
        "the violin",
        "satellites",
        "rust",
        "friendship",
        "chocolate",
        "lighthouses",
        "ants",
        "typewriters",
        "the Sahara",
        "cricket",
        "vaccines",
        "kites",
        "octopuses",
        "windmills",
        "poetry",
        "salt",
        "elevators",
        "the Arctic",
        "mushrooms",
        "bicycle repair",
        "comets",
        "origami",
        "wolves",
        "taxes",
        "perfume",
        "dinosaurs",
        "the printing press",
        "coral reefs",
        "marathons",
        "pianos",
        "sleep",
        "compost",
        "hurricanes",
        "paper money",
        "fireflies",
        "skyscrapers",
    ),
}
_TEMPLATES = {
    "calibration": (
        "Tell me about {t}.",
        "Write a short poem about {t}.",
        "Explain {t} to a child.",
        "What are three facts about {t}?",
        "Why do people care about {t}?",
        "Give me a list of ideas related to {t}.",
        "Describe {t} in two sentences.",
        "How would you teach someone about {t}?",
    ),
    "heldout": (
        "{t}?",
        "Summarize what you know about {t}.",
        "Write a limerick on {t}.",
        "Is {t} important? Answer briefly.",
        "Compare {t} with something similar.",
        "Tell a funny story involving {t}.",
        "What questions could I ask about {t}?",
        "List pros and cons of {t}.",
    ),
}
_WORDS = {
    "calibration": tuple(
        [
            "river",
            "stone",
            "lamp",
            "quiet",
            "orange",
            "window",
            "market",
            "silver",
            "garden",
            "thunder",
            "paper",
            "candle",
            "harbor",
            "meadow",
            "engine",
            "pepper",
            "violet",
            "bridge",
            "anchor",
            "maple",
            "circle",
            "rocket",
            "forest",
            "honey",
            "mirror",
            "planet",
            "shadow",
            "wagon",
            "cotton",
            "pillow",
            "ladder",
            "basket",
            "falcon",
            "marble",
        ]
    ),
    "heldout": tuple(
        [
            "pebble",
            "lantern",
            "hollow",
            "crimson",
            "shutter",
            "bazaar",
            "golden",
            "orchard",
            "storm",
            "parchment",
            "wick",
            "dock",
            "prairie",
            "motor",
            "cinnamon",
            "lilac",
            "viaduct",
            "rope",
            "cedar",
            "square",
            "comet",
            "grove",
            "syrup",
            "glass",
            "nebula",
            "shade",
            "cart",
            "linen",
            "cushion",
            "staircase",
            "crate",
            "heron",
            "granite",
        ]
    ),
}
_STOPS = ("\n", ".", "!", "END", "\n\n")
_SYSTEMS = (
    "You are a helpful assistant.",
    "Answer as briefly as possible.",
    "You are a pirate. Stay in character.",
)


@dataclass(frozen=True)
class TrafficRequest:
    """One user request: chat messages and sampling parameters (the OpenAI request's fields)."""

    split: str
    index: int
    messages: tuple[tuple[str, str], ...]  # (role, content)
    prompt_size: str
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int
    stop: tuple[str, ...] = ()

    def chat(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


def _filler(rng: random.Random, words: tuple[str, ...], n_words: int) -> str:
    out, sentence = [], []
    for _ in range(n_words):
        sentence.append(rng.choice(words))
        if len(sentence) >= rng.randint(6, 14):
            out.append(" ".join(sentence).capitalize() + ".")
            sentence = []
    if sentence:
        out.append(" ".join(sentence).capitalize() + ".")
    return " ".join(out)


def request(split: str, index: int, seed: int = 0) -> TrafficRequest:
    """The ``index``-th request of ``split`` for run ``seed`` (pure; see the module docstring).

    Raises:
        ValueError: unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"{split}/{seed}/{index}")
    topic = rng.choice(_TOPICS[split])
    size, words, _ = rng.choices(PROMPT_SIZES, weights=[w for *_, w in PROMPT_SIZES])[0]
    question = rng.choice(_TEMPLATES[split]).format(t=topic)
    if size == "word":
        content = topic.split()[-1].rstrip("?") + "?"
    elif size == "sentence":
        content = question
    else:
        content = f"{_filler(rng, _WORDS[split], words)}\n\n{question}"
    messages: tuple[tuple[str, str], ...] = (("user", content),)
    if rng.random() < SYSTEM_SHARE:
        messages = (("system", rng.choice(_SYSTEMS)), *messages)
    max_tokens = rng.choices(LENGTHS, weights=LENGTH_WEIGHTS)[0]
    if size in ("long", "near_context"):
        max_tokens = min(max_tokens, 64)  # the prompt fills the context
    stop = tuple(rng.sample(_STOPS, rng.randint(1, 2))) if rng.random() < STOP_SHARE else ()
    return TrafficRequest(
        split=split,
        index=index,
        messages=messages,
        prompt_size=size,
        temperature=rng.choice(TEMPERATURES),
        top_p=rng.choice(TOP_PS),
        top_k=rng.choice(TOP_KS),
        max_tokens=max_tokens,
        seed=rng.getrandbits(64),
        stop=stop,
    )


def requests(split: str, count: int, seed: int = 0, start: int = 0) -> list[TrafficRequest]:
    """``count`` requests of ``split`` from index ``start``."""
    return [request(split, i, seed) for i in range(start, start + count)]
