"""Planning: pure, deterministic functions from an :class:`~polynimbus.intent.Intent` to a
:class:`~polynimbus.plan.model.Plan` (numbering plan, overlay graph, routes, MTU, VNIs)."""

from polynimbus.plan.build import build_plan
from polynimbus.plan.model import Plan

__all__ = ["Plan", "build_plan"]
