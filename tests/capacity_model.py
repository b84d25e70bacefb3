"""A server that batches and queues, simulated on a virtual clock, driving an `AdaptiveLimit`.

The server serves at most `slots` calls at once; a call's service time is
`full * work_share * (1 + (batch - 1) / slots)`, with `batch` the calls in service when
it starts, so batching pays until the slots are full; the rest wait in a FIFO queue.
It never answers 429 unless `refuse_above` is set. The client keeps `limit.limit` calls
in flight out of `calls` and feeds each answer's latency to the limit, as the runner
does. No wall clock: the same seed gives the same run.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field

from pipeline.llm.limits import START, AdaptiveLimit, call_work


@dataclass
class Outcome:
    """What the simulated server and client saw."""

    seconds: float = 0.0
    answered: int = 0
    refused: int = 0
    latencies: list[float] = field(default_factory=list)
    peak_queue: int = 0
    peak_in_flight: int = 0
    limits: list[tuple[float, int, int]] = field(default_factory=list)  # (time, limit, queue) per answer
    limit: AdaptiveLimit | None = None

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds

    def p95(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[int(0.95 * (len(ordered) - 1))]

    def limits_between(self, start: float, end: float) -> list[int]:
        return [limit for t, limit, _ in self.limits if start <= t < end]

    def peak_queue_after(self, start: float) -> int:
        return max((queue for t, _, queue in self.limits if t >= start), default=0)


def best_fixed_throughput(slots: int, full: float = 0.2) -> float:
    """Answers a second with the server's slots exactly full: the most any concurrency gets."""
    return slots / (full * (1 + (slots - 1) / slots))


def simulate(*, slots: int, calls: int, maximum: int = 256, start: int | None = START, cooldown: float = 1.0,
             full: float = 0.2, jitter: float = 0.1, seed: int = 0, capacity: list[tuple[float, int]] = (),
             refuse_above: int | None = None, max_tokens: tuple[int, ...] = (400,)) -> Outcome:
    """Run `calls` calls through a limit of `maximum`, starting at `start` (None: fixed), against the server.

    `capacity` lists (time, slots) changes of the server.
    """
    rng = random.Random(seed)
    limit = AdaptiveLimit(maximum, start=start, cooldown=cooldown, clock=lambda: now)
    out = Outcome(limit=limit)
    events: list[tuple[float, int, float, float]] = []  # (finish time, order, sent at, work)
    queue: deque[tuple[float, float]] = deque()
    order = sent = in_service = 0
    now, slots_now, changes = 0.0, slots, sorted(capacity)
    works = [call_work("x" * 2000, m) for m in max_tokens]
    reference = works[0]

    def serve(sent_at: float, work: float) -> None:
        nonlocal in_service, order
        in_service += 1
        order += 1
        took = full * (work / reference) * (1 + (in_service - 1) / slots_now) * (1 + rng.uniform(-jitter, jitter))
        heapq.heappush(events, (now + took, order, sent_at, work))

    def send() -> None:
        nonlocal sent
        while sent < calls and limit.in_use < limit.limit:
            sent += 1
            work = rng.choice(works)
            if refuse_above is not None and limit.in_use >= refuse_above:
                out.refused += 1
                limit.on_rate_limited()
                sent -= 1  # sent again later, as the runner retries it
                return
            limit.in_use += 1
            out.peak_in_flight = max(out.peak_in_flight, limit.in_use)
            if in_service < slots_now:
                serve(now, work)
            else:
                queue.append((now, work))
                out.peak_queue = max(out.peak_queue, len(queue))

    send()
    for _ in range(50 * calls):  # bounded: every turn answers one call
        if not events:
            break
        now, _, sent_at, work = heapq.heappop(events)
        while changes and changes[0][0] <= now:
            slots_now = changes.pop(0)[1]
        in_service -= 1
        while queue and in_service < slots_now:
            serve(*queue.popleft())
        limit.in_use -= 1
        out.answered += 1
        out.latencies.append(now - sent_at)
        limit.on_success(now - sent_at, work)
        out.limits.append((now, limit.limit, len(queue)))
        send()
    out.seconds = now
    return out
