"""ragdistill: RAG distillation for LLM agents (ALFWorld, WebShop), as a runnable course."""

__version__ = "0.1.0"
