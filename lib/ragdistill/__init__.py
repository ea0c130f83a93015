"""ragdistill: RAG distillation for LLM agents (ALFWorld, WebShop), as a runnable course."""

from ragdistill.run import quiet as _quiet

__version__ = "0.1.0"

_quiet.install()  # before bitsandbytes or peft is imported: their known false alarms stay out of the notebooks
