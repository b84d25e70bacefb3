"""The graph as LangGraph Server and Studio load it (`langgraph dev`, see langgraph.json).

Runs that name no endpoint take the server's: OPENAI_BASE_URL, OPENAI_API_KEY and
OPENAI_MODEL, read as Context.from_env reads them, so that `OPENAI_BASE_URL=... langgraph dev`
serves a graph whose runs need no context at all; with none of them set, the embedded
model answers. A run's own endpoint wins, and never gets the server's key.
A server reads files only inside the folder `SUMMARIZER_ROOT` names (a run's relative
paths are taken from it); without it, documents come only as `texts`.
"""

from __future__ import annotations

import os

from graphs.graph import NAME, make_builder

ROOT = os.environ.get("SUMMARIZER_ROOT") or False

graph = make_builder(environ=dict(os.environ), root=ROOT).compile(name=NAME)
