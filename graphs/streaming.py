"""Run the graph and watch it: a progress bar, and each document's result as it completes.

    out = await run_with_progress({"paths": ["data/a.txt"]}, context=Context(...))

In a notebook the bars are widgets where ipywidgets is installed, else one line of text;
the CLI passes its own view (bars on a terminal, log lines otherwise) and keeps each
result for summaries.jsonl. Everything
comes from LangGraph's own stream (`stream_mode=["custom", "values"]`), so any other
consumer (the server's SDK, Studio) sees the same events:

    {"event": "progress", "phase": "map" | "reduce", "done": int, "total": int}
    {"event": "result", "result": {...one line of summaries.jsonl...}}
    {"event": "stats", "stats": {...the run's counters so far: calls, tokens, retries...}}
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from graphs.context import Context
from graphs.graph import graph as default_graph
from pipeline.progress import BarView, View

Event = dict[str, Any]


async def run_with_progress(graph_input: dict[str, Any], *, context: Context, view: View | None = None,
                            on_result: Callable[[dict[str, Any]], None] | None = None,
                            on_event: Callable[[Event], None] | None = None,
                            graph: Any = default_graph, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run `graph` on `graph_input`, showing progress on `view` (a tqdm bar by default); return its output.

    `on_result` gets each document's result as it completes, `on_event` every event.
    """
    view = BarView() if view is None else view
    final: dict[str, Any] = {}
    # A view that reports on a clock (log lines) is ticked while no event comes.
    ticking = asyncio.ensure_future(_tick(tick)) if (tick := getattr(view, "tick", None)) else None
    try:
        async for mode, chunk in graph.astream(graph_input, config=config, context=context,
                                               stream_mode=["custom", "values"]):
            if mode == "values":
                final = chunk
                continue
            if on_event is not None:
                on_event(chunk)
            if chunk.get("event") == "progress":
                view.show(chunk["phase"], chunk["done"], chunk["total"])
            elif chunk.get("event") == "result" and on_result is not None:
                on_result(chunk["result"])
    finally:
        if ticking is not None:
            ticking.cancel()
        view.close()
    return final


async def _tick(tick: Callable[[], None], period: float = 1.0) -> None:
    """Call `tick` every `period` seconds until cancelled with the stream it watches."""
    while True:  # ends with the run: cancelled in run_with_progress's finally
        await asyncio.sleep(period)
        tick()
