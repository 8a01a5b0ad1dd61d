"""Targets: places apply can observe and change, registered by name in :data:`TARGETS`.

``lab`` builds the emulated multi-cloud on this host from namespaces; ``fake`` records
operations in memory for tests. Agents on real gateways and cloud APIs come later.
"""

from polynimbus.targets import fake, lab  # noqa: F401  (registration)
from polynimbus.targets.base import TARGETS, get_target

__all__ = ["TARGETS", "get_target"]
