"""The agent: LangGraph graphs over the session state, the session tools, and the chat models.

``state``   the session state shape and the graph state
``tools``   add/list/complete tasks, save/read/list files
``offline`` the deterministic offline chat model (the default)
``models``  picks the offline model or an OpenAI-compatible one from configuration
``graph``   the default ReAct graph and the enhanced plan/act graph
``turn``    one user turn through a graph as a stream of event dicts

Nothing here touches storage; :mod:`app.core.engine` wraps a turn in a session lock, a load and a save.
"""

from app.agent.graph import build_graph
from app.agent.models import make_model
from app.agent.offline import OfflineChatModel
from app.agent.tools import default_tools
from app.agent.turn import Turn

__all__ = ["OfflineChatModel", "Turn", "build_graph", "default_tools", "make_model"]
