"""llmhost: facts -> plan -> actions -> verification for local LLM inference hosts."""

__version__ = "0.1.0"
