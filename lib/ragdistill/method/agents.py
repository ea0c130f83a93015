"""Agents: how a prompt is built from an episode, and how an action is read from a model's answer.

ReAct writes a short thought and an action; StateAct first states its goal, location and inventory (on
WebShop: its goal, the page it is on and the options chosen so far). Each agent exists for ALFWorld and
for WebShop, with that benchmark's commands and few-shot examples.
The whole episode is in the prompt as a chat: system (rules, few-shot examples, optional hint block),
then the first observation (room description and task), then the agent's answers and the game's replies.
Training (stage 05) renders examples with the same function, so the format at training and at inference
is one and the same.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache

from ragdistill.run.paths import data_dir

VERBS = ("go to", "take", "move", "put", "open", "close", "clean", "heat", "cool", "use", "examine", "look",
         "inventory", "slice", "help")
HINT_BEGIN = "<<HINTS>>"
HINT_END = "<</HINTS>>"
HINT_PREAMBLE = (
    "Rules learned from earlier attempts at this kind of task. Apply these rules silently; "
    "if a rule conflicts with the observation, prefer the observation."
)

_ACTION_LINE = re.compile(r"^\s*(?:>\s*)?action\s*:\s*(?P<a>.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_WEB_ACTION = re.compile(r"(?:search|click)\[[^\]\n]*\]", re.IGNORECASE)
_BARE = re.compile(r"^\s*(?:>\s*)?(?P<a>(?:" + "|".join(re.escape(v) for v in VERBS) + r")\b.*?)\s*$",
                   re.IGNORECASE | re.MULTILINE)


@dataclass
class Parsed:
    """What was read from one answer: the action sent to the game and whether it was well-formed."""

    action: str
    parsed: bool


def parse_action(text: str) -> Parsed:
    """The last `action:` line; else the last line that starts with a game verb; else the raw text."""
    found = _ACTION_LINE.findall(text)
    if found:
        return Parsed(found[-1].strip().strip("`'\""), True)
    bare = _BARE.findall(text)
    if bare:
        return Parsed(bare[-1].strip(), True)
    return Parsed(" ".join(text.split()), False)  # still sent: the game answers "Nothing happens."


def parse_web_action(text: str) -> Parsed:
    """WebShop: the `search[...]`/`click[...]` of the last `action:` line that has one; else the last one anywhere."""
    for line in reversed(_ACTION_LINE.findall(text)):
        found = _WEB_ACTION.findall(line)
        if found:
            return Parsed(found[-1], True)
    found = _WEB_ACTION.findall(text)
    if found:
        return Parsed(found[-1], True)
    return Parsed(" ".join(text.split()), False)  # still sent: the shop ignores it and shows the same page again


def hint_block(hints: list[str]) -> str:
    """The delimited hint block, worded the same for every episode."""
    lines = "\n".join(f"- {h}" for h in hints)
    return f"{HINT_BEGIN}\n{HINT_PREAMBLE}\n{lines}\n{HINT_END}"


@lru_cache(maxsize=None)
def load_fewshot(agent: str, env: str = "alfworld") -> dict[str, list[dict]]:
    """Few-shot episodes per task type (`*`: for every type), written from train tasks (data/fewshot/):
    ALFWorld's from expert walkthroughs, WebShop's one example from a train goal."""
    path = data_dir() / "fewshot" / f"{env}_{agent}.json"
    if not path.is_file():
        raise FileNotFoundError(f"few-shot examples for agent {agent!r} on {env} not found at {path}")
    return json.loads(path.read_text())


@dataclass
class Agent:
    """Prompt building and answer parsing for one prompting style."""

    name: str
    instructions: str
    fewshot_count: int = 2
    # One limit for every agent: a lockstep batch mixes agents and cuts every answer at one length, an episode
    # stepping alone (a server, asynchronous) at its agent's; the two must give the same episodes.
    max_new_tokens: int = 128
    env: str = "alfworld"

    def render_example(self, example: dict) -> str:
        """A few-shot episode as plain text inside the system prompt."""
        lines = [example["observation"]]
        for step in example["steps"]:
            lines.append(f"> {step['answer'].replace(chr(10), chr(10) + '  ')}")
            lines.append(step["observation"])
        return "\n".join(lines)

    def system_prompt(self, task_type: str, hints: list[str] | None = None, fewshot: bool = True) -> str:
        parts = [self.instructions]
        if fewshot and self.fewshot_count:
            shots = load_fewshot(self.name, self.env)
            examples = (shots.get(task_type) or shots.get("*", []))[: self.fewshot_count]
            for i, ex in enumerate(examples, 1):
                parts.append(f"Example {i}:\n{self.render_example(ex)}")
        if hints:
            parts.append(hint_block(hints))
        parts.append("Now the real game begins.")
        return "\n\n".join(parts)

    def messages(
        self,
        task_type: str,
        first_observation: str,
        turns: list[tuple[str, str]],
        hints: list[str] | None = None,
        fewshot: bool = True,
    ) -> list[dict]:
        """The chat for the next answer: system, first observation, then (answer, observation) turns."""
        chat = [
            {"role": "system", "content": self.system_prompt(task_type, hints, fewshot)},
            {"role": "user", "content": first_observation},
        ]
        for answer, observation in turns:
            chat.append({"role": "assistant", "content": answer})
            chat.append({"role": "user", "content": observation})
        return chat

    def parse(self, text: str) -> Parsed:
        return parse_web_action(text) if self.env == "webshop" else parse_action(text)


_COMMANDS = (
    "Commands: go to {recep}; open/close {recep}; take {obj} from {recep}; move {obj} to {recep}; "
    "heat/cool/clean {obj} with {appliance}; use {lamp}; examine {thing}; look; inventory."
)

REACT = Agent(
    "react",
    "You are an agent in a household text game (ALFWorld). Each turn, answer in two lines:\n"
    "think: <one short thought about what to do next>\naction: <one game command>\n" + _COMMANDS,
)

STATEACT = Agent(
    "stateact",
    "You are an agent in a household text game (ALFWorld). Each turn, first state where you are, then act, "
    "in five lines:\ngoal: <the task>\nlocation: <where you are>\ninventory: <what you hold, or nothing>\n"
    "thought: <one short thought>\naction: <one game command>\n" + _COMMANDS,
    max_new_tokens=128,
)

_WEB_ACTIONS = (
    "Actions: search[<keywords>] on the search page; click[<button>] with a button, a product id or an option "
    "value exactly as the page shows it, in lower case: click[next >], click[b0123abcde], click[large], "
    "click[buy now]. Choose the instruction's options on the item page before buying; mind the price limit."
)

WEB_REACT = Agent(
    "react",
    "You are shopping in a web store (WebShop) for the product the instruction describes. Each turn, answer in "
    "two lines:\nthink: <one short thought about what to do next>\naction: <one action>\n" + _WEB_ACTIONS,
    fewshot_count=1,
    env="webshop",
)

WEB_STATEACT = Agent(
    "stateact",
    "You are shopping in a web store (WebShop) for the product the instruction describes. Each turn, first "
    "state where you are, then act, in five lines:\ngoal: <what to buy: type, attributes, options, price limit>\n"
    "page: <the page you are on>\nchosen: <options chosen so far, or nothing>\nthought: <one short thought>\n"
    "action: <one action>\n" + _WEB_ACTIONS,
    fewshot_count=1,
    max_new_tokens=128,
    env="webshop",
)

AGENTS = {a.name: a for a in (REACT, STATEACT)}
WEB_AGENTS = {a.name: a for a in (WEB_REACT, WEB_STATEACT)}


def get_agent(name: str, env: str = "alfworld") -> Agent:
    """The agent `name` (react, stateact) for a benchmark (alfworld, webshop)."""
    agents = WEB_AGENTS if env == "webshop" else AGENTS
    try:
        return agents[name]
    except KeyError:
        raise ValueError(f"unknown agent {name!r}: choose one of {', '.join(agents)}") from None
