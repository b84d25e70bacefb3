"""Prices and the spending cap: estimate what a run costs and stop before it costs more."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pipeline.errors import BudgetExceededError

# USD per million tokens (input, output), as published for these models in 2026; pass
# --price-in/--price-out for any other model or when prices change.
KNOWN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}


@dataclass(frozen=True, slots=True)
class Price:
    """Cost per million input and output tokens."""

    per_m_in: float
    per_m_out: float

    def cost(self, tokens_in: float, tokens_out: float) -> float:
        return (tokens_in * self.per_m_in + tokens_out * self.per_m_out) / 1e6

    def batch(self) -> Price:
        """The Batch API's price: half of both rates."""
        return Price(self.per_m_in / 2, self.per_m_out / 2)


def price_for(model: str, price_in: float | None = None, price_out: float | None = None) -> Price | None:
    """Return the given prices, else the known ones for `model`, else None."""
    if price_in is not None or price_out is not None:
        return Price(price_in or 0.0, price_out or 0.0)
    known = KNOWN_PRICES.get(model)
    return Price(*known) if known else None


class Budget:
    """Track spending; refuse a call whose worst case would pass the cap.

    A call reserves its worst case (its prompt plus max_tokens of answer) before it
    starts and settles at its real usage, so concurrent calls cannot jointly overshoot.
    A call that does not fit waits for the calls in flight to settle (their answers are
    paid for and kept) and only then, if it still does not fit, stops the run.
    """

    def __init__(self, price: Price, max_cost: float | None) -> None:
        self.price = price
        self.max_cost = max_cost
        self.spent = 0.0
        self._reserved = 0.0
        self._settled = asyncio.Condition()

    async def reserve(self, tokens_in: int, max_tokens_out: int) -> float:
        worst = self.price.cost(tokens_in, max_tokens_out)
        if self.max_cost is not None:
            async with self._settled:
                await self._settled.wait_for(lambda: self._fits(worst) or self._reserved <= 0)
                if not self._fits(worst):
                    raise BudgetExceededError(
                        f"stopped before the spending cap: ${self.spent:.4f} spent, the next call could cost "
                        f"${worst:.4f} and the cap is ${self.max_cost:.4f} (--max-cost); finished results are kept")
        self._reserved += worst
        return worst

    def _fits(self, cost: float) -> bool:
        return self.max_cost is None or self.spent + self._reserved + cost <= self.max_cost

    async def settle(self, reserved: float, tokens_in: int = 0, tokens_out: int = 0) -> None:
        self._reserved -= reserved
        self.spent += self.price.cost(tokens_in, tokens_out)
        if self.max_cost is not None:
            async with self._settled:
                self._settled.notify_all()
