"""The summarization graph: `await graph.ainvoke({"paths": [...]}, context=Context(...))`."""

from graphs.context import Context
from graphs.graph import builder, graph, recursion_limit
from graphs.state import InputState, OutputState

__all__ = ["Context", "InputState", "OutputState", "builder", "graph", "recursion_limit"]
