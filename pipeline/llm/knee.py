"""Find how many calls in flight a server that batches and queues can take, from its latency alone.

vLLM, llama.cpp and TGI batch what they can and queue the rest: past their capacity
they answer 200, later, instead of 429. `KneeSearch` grows the calls in flight while that
buys throughput and gives back what only lengthens the queue; `AdaptiveLimit`
(pipeline.llm.limits) applies what it decides.
"""

from __future__ import annotations

START = 4  # calls in flight before a server has shown what it can take
GROW, SHRINK = 1.25, 0.8  # the probing steps around the limit settled on
WORTH = 0.2  # a step pays when throughput moves by at least this share of the step in calls in flight
START_WORTH = 0.45  # slow start's doublings must pay more: one past the knee doubles the queue
PLAIN_WORTH = 0.7  # a doubling that pays this much shows it in half a round (far below the knee)
KNEE_MARGIN = 0.9  # of the least knee that a doubling past it shows (Little's law), where the search goes on
CRUISE_ROUNDS = 3  # rounds at the settled limit between probes (a probe costs a little throughput or latency)
ROUND = 8  # fewest answers in one measurement (and at least the limit's worth: about one latency)
GOT_FASTER = 0.05  # throughput up this much on a step down: the server gained capacity (a probe down is no cut)
QUEUE_RISE = 1.5  # latency per token up (or down) this much at an unchanged limit: the server changed
SLOW_START, CRUISE, PROBE_UP, PROBE_DOWN = range(4)


def call_work(prompt: str | tuple[str, str], max_tokens: int) -> float:
    """A call's weight for its latency: the tokens it may write, plus its prompt's, read ~8x faster.

    Latency divided by this reads the same for long and short calls, so that a run of
    big reduce prompts is not taken for load. `prompt` is the text, or its messages'
    texts (a `Prompt`: system, user); a character is about a quarter of a token.
    """
    chars = len(prompt) if isinstance(prompt, str) else len(prompt[0]) + len(prompt[1])
    return 1.0 + max_tokens + chars / 32


class KneeSearch:
    """Find the calls in flight past which a server's latency grows without its throughput.

    Answers are measured in rounds of at least `ROUND` and the limit's worth (about one
    latency), each once the answers sent before the last change, and those sent while
    its queue formed, have come back: the mean calls in flight over the mean latency per
    unit of work is the throughput (Little's law). Slow start doubles the limit while
    throughput grows with it, measuring half rounds (of at least `START`); when a doubling
    does not pay, the knee lies at least where its throughput would be carried at the last
    level's latency, and the search goes on from there: it probes one step up
    (kept if throughput grew by `WORTH` of the step: below the knee batching still pays)
    and one step down (kept if throughput held: the step was queue), and cruises
    `CRUISE_ROUNDS` rounds between such probes. Latency up by `QUEUE_RISE` more than the
    step in calls in flight explains means a queue formed (the server lost capacity): the
    limit is cut at once to what kept the old latency; at an unchanged limit, latency down
    as much means capacity came back: slow start again. A probe down that gains throughput
    (`GOT_FASTER`) is kept and followed at once by a probe up: the server gained capacity,
    or the limit settled on was past its best. A round where demand leaves the limit unused
    teaches nothing and changes nothing. Feed it with `observe`; it returns a new limit
    when it decides one. A round costs a few float additions per answer, nothing more.
    """

    __slots__ = ("maximum", "base", "phase", "_ref", "_ref_latency", "_skip", "_round", "_n",
                 "_latency", "_in_flight", "_cruised")

    def __init__(self, start: int, maximum: int) -> None:
        self.maximum = maximum
        self.base = start  # the limit settled on, that the probes start from
        self.phase = SLOW_START
        self._ref: tuple[float, float] | None = None  # (calls in flight, throughput) at `base`
        self._ref_latency = 0.0
        self._skip = start  # answers still to come that were sent under an earlier limit (or cold: a new connection)
        self._round = START
        self._n = self._cruised = 0
        self._latency = self._in_flight = 0.0

    def observe(self, latency: float, in_flight: int, limit: int) -> int | None:
        """Take one answer's latency per work and the calls then in flight (itself included); maybe a new limit."""
        if self._skip:
            self._skip -= 1
            return None
        self._n += 1
        self._latency += latency
        self._in_flight += in_flight
        if self._n < self._round:
            return None
        n = self._n
        mean_latency, mean_in_flight = self._latency / n, self._in_flight / n
        if self._round < max(ROUND, limit) and self.phase == SLOW_START and self._ref is not None and not self._pays(
                mean_in_flight, mean_in_flight / mean_latency, PLAIN_WORTH):
            # Near the knee, the first answers at a new level come from calls that queued the least:
            # measure the whole round before a doubling is judged.
            self._round = max(ROUND, limit)
            return None
        self._n, self._latency, self._in_flight = 0, 0.0, 0.0
        target = self._decide(mean_in_flight, mean_in_flight / mean_latency, mean_latency, limit)
        if target is not None:
            target = max(1, min(self.maximum, target))
            # The answers sent before the change, then those sent into the queue it was building.
            self._skip = in_flight + (target if self.phase != SLOW_START else 0)
        # Slow start measures half a round first: far below the knee, where it spends its time,
        # the rounds it compares differ by the doubling itself, far beyond noise.
        level = target or limit
        self._round = max(START, level // 2) if self.phase == SLOW_START else max(ROUND, level)
        return target

    def describe(self) -> str:
        """The search's phase and reference, for the debug log."""
        in_flight, throughput = self._ref or (0.0, 0.0)
        phase = ("slow start", "cruise", "probe up", "probe down")[self.phase]
        return f"{phase}, settled on {self.base}: {in_flight:.0f} in flight, {throughput:.4g} work/s"

    def backed_off(self, limit: int, in_flight: int) -> None:
        """Settle on `limit`, set from outside (after a 429): probe from there, measured afresh."""
        self.base, self.phase, self._ref, self._ref_latency = limit, CRUISE, None, 0.0
        self._n, self._cruised, self._latency, self._in_flight = 0, 0, 0.0, 0.0
        self._skip, self._round = in_flight, max(ROUND, limit)

    def _decide(self, in_flight: float, throughput: float, latency: float, limit: int) -> int | None:
        if in_flight < 0.75 * limit:  # demand, not the limit, held the calls in flight
            return None
        if self.phase == SLOW_START:
            if self._ref is None or self._pays(in_flight, throughput, START_WORTH):
                self._settle(in_flight, throughput, latency, limit)
                return limit * 2 if limit < self.maximum else self._probe_down()
            # The knee lies between the last level that paid and this one: at least where this
            # round's throughput would be carried at the last level's latency (Little's law),
            # less a margin: the round's first answers, sent as the queue formed, waited the least.
            if self._ref_latency:
                self.base = max(self.base, min(limit - 1, int(KNEE_MARGIN * throughput * self._ref_latency)))
            return self._probe_up()
        before = self._ref_latency
        stepped = max(1.0, in_flight / self._ref[0]) if self._ref else 1.0
        if before and latency > before * QUEUE_RISE * stepped:  # more queue than any step explains: capacity lost
            self.phase, self._cruised = CRUISE, 0
            self.base = max(1, int(limit * before / latency))  # what kept the latency it had
            return self.base
        if self.phase == CRUISE:
            self._settle(in_flight, throughput, latency, self.base)
            if before and latency * QUEUE_RISE < before:  # the server got faster: look for its new knee
                self.phase = SLOW_START
                return limit * 2
            self._cruised += 1
            if self._cruised < CRUISE_ROUNDS:
                return None
            self._cruised = 0
            return self._probe_up()
        if self.phase == PROBE_UP:
            if self._pays(in_flight, throughput):
                self._settle(in_flight, throughput, latency, limit)
                return self._probe_up()
            return self._probe_down()
        if self._got_faster(in_flight, throughput):  # PROBE_DOWN, yet more throughput: no step down further
            self._settle(in_flight, throughput, latency, limit)  # (an overloaded server gains with fewer calls too)
            return self._probe_up()  # a server that gained capacity pays for it at once
        if self._holds(in_flight, throughput):  # PROBE_DOWN: nothing lost, the step was queue
            self._settle(in_flight, throughput, latency, limit)
            return self._probe_down()
        self.phase = CRUISE
        return self.base

    def _settle(self, in_flight: float, throughput: float, latency: float, limit: int) -> None:
        self.base, self._ref, self._ref_latency = limit, (in_flight, throughput), latency

    def _probe_up(self) -> int:
        if self.base >= self.maximum:
            return self._probe_down()
        self.phase = PROBE_UP
        return max(self.base + 1, round(self.base * GROW))

    def _probe_down(self) -> int:
        if self.base <= 1:
            self.phase = CRUISE
            return self.base
        self.phase = PROBE_DOWN
        return min(self.base - 1, round(self.base * SHRINK))

    def _pays(self, in_flight: float, throughput: float, worth: float = WORTH) -> bool:
        """Whether throughput grew by at least `worth` of the growth in calls in flight since the reference."""
        ref_in_flight, ref_throughput = self._ref or (in_flight, throughput)
        grown = in_flight / ref_in_flight - 1
        return grown > 0.05 and throughput / ref_throughput - 1 >= worth * grown

    def _got_faster(self, in_flight: float, throughput: float) -> bool:
        """Whether throughput grew by GOT_FASTER though calls in flight fell: the server, not the step, changed."""
        ref_in_flight, ref_throughput = self._ref or (in_flight, throughput)
        return in_flight < ref_in_flight and throughput >= (1 + GOT_FASTER) * ref_throughput

    def _holds(self, in_flight: float, throughput: float) -> bool:
        """Whether throughput fell by less than `WORTH` of the fall in calls in flight since the reference."""
        ref_in_flight, ref_throughput = self._ref or (in_flight, throughput)
        return 1 - throughput / ref_throughput <= WORTH * (1 - in_flight / ref_in_flight)
