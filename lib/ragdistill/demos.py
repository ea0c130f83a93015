"""Expert demonstrations in the agents' own answer formats: a walkthrough transcript plus short thoughts.

Used to write the few-shot examples (data/fewshot/) and the warm-start data of the small models, so
both speak exactly the format the agents are parsed in.
"""

from __future__ import annotations

import re

from .alfworld_env import folder_names

START = "the middle of the room"


def _an(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def annotate(record: dict, grounded: bool = False) -> list[dict]:
    """Per step: a thought, the action, the observation, and the location and inventory before acting.

    `grounded` thoughts open every search step with the object sought ("Looking for an egg:"), then say
    whether the receptacle just visited holds one ("egg 1 is here." / "none here."), before the action: the
    decision to take or to search on is written right after the object's name, and never depends on what
    later steps find.
    """
    obj = record.get("target") or folder_names(record["game_id"])[0]
    steps = record["steps"]
    location, inventory, transformed = START, [], False
    out = []
    for i, step in enumerate(steps):
        action, nxt = step["action"], steps[i + 1]["action"] if i + 1 < len(steps) else ""
        before = {"location": location, "inventory": list(inventory)}
        if action.startswith("go to "):
            place = action[6:]
            kind = re.sub(r"\s*\d+$", "", place)
            if grounded and not inventory:
                searched = i > 0 and steps[i - 1]["action"].startswith(("go to ", "open "))
                lead = f"Looking for {_an(obj)}: none here." if searched else f"Looking for {_an(obj)}."
                rule = f" A rule says to search the {kind}s early." if kind in record.get("guides", ()) else ""
                thought = f"{lead}{rule} I will check {place}."
            elif not inventory and kind in record.get("guides", ()):
                thought = f"A rule says to search the {kind}s early for {_an(obj)}. I will check {place}."
            elif not inventory:
                thought = (
                    f"{_an(obj).capitalize()} could be on or in {place}. I will look there."
                    if nxt.startswith(("take", "open", "use"))
                    else f"I need to find {_an(obj)}. I will check {place}."
                )
            else:
                held = inventory[-1].rsplit(" ", 1)[0]
                verb = record["task_type"]
                if verb in ("heat", "cool", "clean") and not transformed:
                    thought = f"I have the {held}. To {verb} it, I go to {place}."
                elif nxt.startswith("use"):
                    thought = f"Now I need a light to examine the {held}. I go to {place}."
                else:
                    thought = f"Now I take the {held} to {place}."
            location = place
        elif action.startswith("take "):
            item = re.match(r"take (.+?) from", action).group(1)
            thought = f"Looking for {_an(obj)}: {item} is here. I take it." if grounded and not inventory else f"I see {item} here. I take it."
            inventory.append(item)
        elif action.startswith("open "):
            thought = f"The {location} is closed. I open it to look inside."
        elif action.startswith(("heat ", "cool ", "clean ")):
            verb, rest = action.split(" ", 1)
            thought = f"I {verb} the {rest.split(' with ')[0]} with {rest.split(' with ')[1]}."
            transformed = True
        elif action.startswith("move "):
            item = re.match(r"move (.+?) to", action).group(1)
            thought = f"I put the {item} in/on {location}."
            if item in inventory:
                inventory.remove(item)
        elif action.startswith("use "):
            thought = f"I turn on the {action[4:]} to look at the {inventory[-1] if inventory else obj} under it."
        else:
            thought = "I look around."
        out.append({"thought": thought, "action": action, "observation": step["observation"], **before})
    return out


def answer(agent: str, task: str, step: dict) -> str:
    """One step as the agent writes it."""
    if agent == "react":
        return f"think: {step['thought']}\naction: {step['action']}"
    if agent == "stateact":
        inv = ", ".join(step["inventory"]) or "nothing"
        return (
            f"goal: {task.rstrip('.')}\nlocation: {step['location']}\ninventory: {inv}\n"
            f"thought: {step['thought']}\naction: {step['action']}"
        )
    raise ValueError(f"unknown agent {agent!r}")


def demo_turns(agent: str, record: dict, grounded: bool = False) -> list[tuple[str, str]]:
    """(answer, observation) turns of a demonstration, ready for Agent.messages (`grounded`: see annotate)."""
    return [(answer(agent, record["task"], s), s["observation"]) for s in annotate(record, grounded)]
