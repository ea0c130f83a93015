"""Stage 01, failure collection: everything notebook 01 reads, from this one module.

The base agents play training games with no help; their failures feed stage 02 and their successes are the plain
SFT baseline's data. The pieces live where later stages share them (the agents, the rollout engines, the episode
tables); this module names the ones stage 01 uses, so that the notebook imports its stage from one place.
"""

from __future__ import annotations

from ragdistill.benchmarks import balanced, open_env, training_tasks
from ragdistill.generation.backends import make_backend
from ragdistill.method.agents import get_agent, parse_action
from ragdistill.method.analysis import episodes_frame, render_episode, success_table, summary
from ragdistill.method.rollout.episodes import stop_reason
from ragdistill.method.rollout.lockstep import EpisodeSpec, read_episodes, run_rollouts

__all__ = ["EpisodeSpec", "balanced", "episodes_frame", "get_agent", "make_backend", "open_env", "parse_action",
           "read_episodes", "render_episode", "run_rollouts", "stop_reason", "success_table", "summary",
           "training_tasks"]
