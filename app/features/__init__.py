"""Feature engine: Qlib expression strings evaluated over a :class:`~app.data.panel.Panel` with Qlib's numbers."""

from app.features.engine import evaluate, required_fields
from app.features.parser import OPERATORS, Call, Const, Field, Node, parse

__all__ = ["OPERATORS", "Call", "Const", "Field", "Node", "evaluate", "parse", "required_fields"]
