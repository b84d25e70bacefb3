"""The graph as LangGraph Server and Studio load it (`langgraph dev`, see langgraph.json).

The one module besides run.py that reads the environment: the endpoint, key and model
come from the standard OpenAI variables, so that `OPENAI_BASE_URL=... langgraph dev`
serves a graph whose runs need no context at all; a run's own context still wins.
"""

from __future__ import annotations

import os

from graphs.graph import NAME, make_builder

ENDPOINT = {
    "base_url": os.environ.get("OPENAI_BASE_URL") or None,
    "api_key": os.environ.get("OPENAI_API_KEY") or None,
    "model": os.environ.get("OPENAI_MODEL") or None,
}

graph = make_builder(endpoint=ENDPOINT).compile(name=NAME)
