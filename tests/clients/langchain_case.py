"""What both LangChain client tests send: the case study's messages and one tool.

Two system messages (the static instructions, then a line with the time that changes
every call) and the user's question, as the case study's app built them with LangChain;
``order_status`` is the tool of the tool-loop tests.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool

from tests.clients.conftest import STATIC_SYSTEM, dynamic_system


@tool
def order_status(order_id: str) -> str:
    """The shipping status of an order."""
    return f"order {order_id} shipped yesterday"


def case_study(minute: int, question: str) -> list[Any]:
    return [
        SystemMessage(STATIC_SYSTEM),
        SystemMessage(dynamic_system(minute)),
        HumanMessage(question),
    ]
