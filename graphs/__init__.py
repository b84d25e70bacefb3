"""The summarization graph: `await graph.ainvoke({"paths": [...]}, context=Context(...))`."""

from graphs.context import Context
from graphs.graph import builder, graph, make_builder
from graphs.state import InputState, OutputState
from graphs.streaming import run_with_progress

__all__ = ["Context", "InputState", "OutputState", "builder", "graph", "make_builder", "run_with_progress"]
