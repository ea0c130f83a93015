"""The names the stage configs check parameters against; the modules that implement them import them from here."""

from __future__ import annotations

AGENT_NAMES = ("react", "stateact")  # method/agents.py: ReAct and StateAct prompting
ENGINES = ("vllm", "transformers-serve")  # generation/server.py: the servers a stage can start
# Where a stage's model answers: "auto" picks, "local" is in process, "openai" any server at base_url.
BACKENDS = ("auto", "local", *ENGINES, "openai")
# Stage 06: the paper's four conditions, then the placebo ablation (base with the retrieved hints' objects and
# receptacles swapped for others: Benchmark.placebo), played only when asked for.
CONDITIONS = ("base", "hints", "sft", "distilled", "placebo")
