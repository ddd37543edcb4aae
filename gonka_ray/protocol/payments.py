"""Escrow, cost and refund arithmetic (DESIGN §2.7). Integers only: amounts never round.

escrow = (prompt_tokens + max_tokens) × price, locked at Start; cost = (prompt_tokens +
completion_tokens) × price, taken at Finish; the rest is released. An expired or invalidated
inference refunds in full what the requester paid.
"""

from __future__ import annotations

MAX_AMOUNT = 2**63 - 1


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
