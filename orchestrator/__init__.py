"""Redis-driven process orchestrator for data pipelines.

The producer API is here (``orchestrator.Producer``, ``orchestrator.enqueue``;
see ``orchestrator.producer``), loaded on first use: a worker that imports
``orchestrator.worker`` pays nothing for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.producer import Producer, ReplicationTimeout, enqueue

__all__ = ["Producer", "ReplicationTimeout", "enqueue"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from orchestrator import producer

        return getattr(producer, name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
