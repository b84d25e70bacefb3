"""The graph as LangGraph Server and Studio load it (`langgraph dev`, see langgraph.json).

Runs that name no endpoint take the server's: OPENAI_BASE_URL, OPENAI_API_KEY and
OPENAI_MODEL, read as Context.from_env reads them, so that `OPENAI_BASE_URL=... langgraph dev`
serves a graph whose runs need no context at all; with none of them set, the embedded
model answers. A run's own endpoint wins, and never gets the server's key.
"""

from __future__ import annotations

import os

from graphs.graph import NAME, make_builder

graph = make_builder(environ=dict(os.environ)).compile(name=NAME)
