"""The agent: LangGraph graphs over the session state, the session tools, and the chat models.

``session_state``  the session state shape and the graph state
``tools``   add/list/complete tasks, save/read/list files
``offline`` the deterministic offline chat model (the default)
``models``  picks the offline model or an OpenAI-compatible one from configuration
``graph``   the default ReAct graph and the enhanced plan/act graph
``run``     one graph run: a user message through a graph as a stream of events
``events``  the event dicts a turn streams

Nothing here touches storage; the engine's turn (:mod:`app.core.turn`) wraps a run in a session
lock, a load and a save.
"""

from app.agent.graph import build_graph
from app.agent.models import make_model
from app.agent.offline import OfflineChatModel
from app.agent.run import GraphRun
from app.agent.tools import default_tools

__all__ = ["GraphRun", "OfflineChatModel", "build_graph", "default_tools", "make_model"]
