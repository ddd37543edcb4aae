"""Escrow, cost and refund arithmetic (DESIGN §2.7). Integers only: amounts never round.

escrow = (prompt_tokens + max_tokens) × price, locked at Start; cost = (prompt_tokens +
completion_tokens) × price, taken at Finish; the rest is released. An expired or invalidated
inference refunds in full what the requester paid.
"""

from __future__ import annotations

from gonka_ray.constants import (
    ESCROW_PROMPT_TOKENS_PER_BYTE,
    ESCROW_TEMPLATE_TOKENS,
    ESCROW_TEMPLATE_TOKENS_PER_MESSAGE,
    MAX_AMOUNT,
)


def _check(name: str, value: int) -> None:
    if type(value) is not int or not 0 <= value <= MAX_AMOUNT:
        raise ValueError(f"{name} must be an integer in [0, 2^63)")


def escrow_amount(prompt_tokens: int, max_tokens: int, price_per_token: int) -> int:
    """Units locked when an inference starts."""
    for name, v in (
        ("prompt_tokens", prompt_tokens),
        ("max_tokens", max_tokens),
        ("price_per_token", price_per_token),
    ):
        _check(name, v)
    amount = (prompt_tokens + max_tokens) * price_per_token
    _check("escrow", amount)
    return amount


def cost_amount(
    prompt_tokens: int, completion_tokens: int, price_per_token: int, escrow: int
) -> int:
    """Units charged at Finish, never more than the escrow."""
    for name, v in (
        ("prompt_tokens", prompt_tokens),
        ("completion_tokens", completion_tokens),
        ("price_per_token", price_per_token),
        ("escrow", escrow),
    ):
        _check(name, v)
    return min(escrow, (prompt_tokens + completion_tokens) * price_per_token)


def request_escrow_bound(texts: list[str], max_tokens: int, price_per_token: int) -> int:
    """The most an honest escrow of a request with these message texts (or one prompt) and
    ``max_tokens`` can be: the SDK's and the API keys' default ``max_escrow``."""
    prompt_bound = (
        ESCROW_PROMPT_TOKENS_PER_BYTE * sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
        + ESCROW_TEMPLATE_TOKENS_PER_MESSAGE * len(texts)
        + ESCROW_TEMPLATE_TOKENS
    )
    return escrow_amount(prompt_bound, max_tokens, price_per_token)
