"""The graph as LangGraph Server and Studio load it (`langgraph dev`, see langgraph.json).

The one module besides run.py that reads the environment: the endpoint, key and model
come from the standard OpenAI variables, so that `OPENAI_BASE_URL=... langgraph dev`
serves a graph whose runs need no context at all; a run's own context still wins.
A server reads files only inside the folder `SUMMARIZER_ROOT` names (a run's relative
paths are taken from it); without it, documents come only as `texts`.
"""

from __future__ import annotations

import os

from graphs.graph import NAME, make_builder

ENDPOINT = {
    "base_url": os.environ.get("OPENAI_BASE_URL") or None,
    "api_key": os.environ.get("OPENAI_API_KEY") or None,
    "model": os.environ.get("OPENAI_MODEL") or None,
}

ROOT = os.environ.get("SUMMARIZER_ROOT") or False

graph = make_builder(endpoint=ENDPOINT, root=ROOT).compile(name=NAME)
