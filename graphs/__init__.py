"""The summarization graph: `await graph.ainvoke({"paths": [...]}, context=Context(...))`."""

from graphs.context import Context
from graphs.graph import builder, graph
from graphs.state import InputState, OutputState

__all__ = ["Context", "InputState", "OutputState", "builder", "graph"]
