"""polynimbus: one private, encrypted network across many clouds.

Stages, each in its own package: ``intent`` (load and validate YAML) -> ``plan`` (pure,
deterministic numbering plan, overlay graph, routes, MTU) -> ``render`` (text artifacts and
the lab's desired resources) -> ``apply`` (observe, diff, change a target) -> ``verify``.
"""

__version__ = "0.3.0"
