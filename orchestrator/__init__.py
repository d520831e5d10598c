"""Redis-driven process orchestrator for data pipelines."""
