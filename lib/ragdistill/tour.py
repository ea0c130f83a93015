"""Notebook 00, the environment tour: everything it reads, from this one module.

The tour is not a stage of the method: it shows the two benchmarks (splits, a game played by its expert), the
profile's model answering a chat, and, on the cpu profile, how its warm-started model was built.
"""

from __future__ import annotations

from ragdistill.benchmarks import expert_actions, list_tasks, open_env, split_counts
from ragdistill.benchmarks.alfworld.env import normalize_action
from ragdistill.method.agents import get_agent
from ragdistill.miniature.warmstart import warmstart_info
from ragdistill.models.loading import answer_chat, load_model
from ragdistill.models.profiles import get_profile

__all__ = ["answer_chat", "expert_actions", "get_agent", "get_profile", "list_tasks", "load_model",
           "normalize_action", "open_env", "split_counts", "warmstart_info"]
