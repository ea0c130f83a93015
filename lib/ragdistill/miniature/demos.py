"""Expert demonstrations in the agents' own answer formats: a walkthrough transcript plus short thoughts.

Used to write the few-shot examples (data/fewshot/) and the warm-start data of the small models, so
both speak exactly the format the agents are parsed in.
"""

from __future__ import annotations

import re

from ragdistill.benchmarks.alfworld.env import folder_names
from ragdistill.benchmarks.alfworld.hints import APPLIANCE

START = "the middle of the room"


def _an(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


THOUGHTS = ("plain", "planned")
_VERBED = {"heat": "heated", "cool": "cooled", "clean": "cleaned"}


def _rest_of_task(task_type: str, receptacle: str) -> str:
    """What a task needs once its object is in hand, as a "planned" thought says it."""
    if task_type in APPLIANCE:
        return f"{task_type} it with the {APPLIANCE[task_type][1]}, then put it in the {receptacle}"
    if task_type == "examine":
        return f"use the {receptacle} while I hold it"
    if task_type == "puttwo":
        return f"put it in the {receptacle}, then find the second one"
    return f"put it in the {receptacle}"


def _carrying(held: str, verb: str, place: str, nxt: str, transformed: bool, planned: bool, receptacle: str) -> str:
    """The thought of a `go to` with the object in hand (`verb`: the task type; `nxt`: the next action)."""
    if planned and verb in _VERBED:
        return (f"The {held} is {_VERBED[verb]}. Now I take it to {place}." if transformed
                else f"The {held} is not {_VERBED[verb]} yet. I go to {place} to {verb} it.")
    if planned and nxt.startswith("use"):
        return f"I hold the {held}. I go to {place} to use the {receptacle}."
    if verb in ("heat", "cool", "clean") and not transformed:
        return f"I have the {held}. To {verb} it, I go to {place}."
    if nxt.startswith("use"):
        return f"Now I need a light to examine the {held}. I go to {place}."
    return f"Now I take the {held} to {place}."


def annotate(record: dict, thoughts: str = "plain") -> list[dict]:
    """Per step: a thought, the action, the observation, and the location and inventory before acting.

    `thoughts` picks how they are written (THOUGHTS). "planned" opens every search step with the object
    sought ("Looking for an egg:"), then says whether the receptacle just visited holds one ("egg 2 is here." /
    "none here."), before the action: the decision to take or to search on is written right after the object's
    name, and never depends on what later steps find; once the object is in hand it says
    what the task still needs ("I take it, then heat it with the microwave, then put it in the garbagecan"; "The
    egg is not heated yet."), and at the target whether it is open or closed (then it is opened first), each
    step's thought following from the one before and the last observation.
    """
    if thoughts not in THOUGHTS:
        raise ValueError(f"unknown thoughts {thoughts!r}: pick one of {', '.join(THOUGHTS)}")
    planned = thoughts == "planned"
    named, receptacle = folder_names(record["game_id"])
    obj = record.get("target") or named
    steps = record["steps"]
    location, inventory, transformed, placed = START, [], False, 0
    out = []
    for i, step in enumerate(steps):
        action, nxt = step["action"], steps[i + 1]["action"] if i + 1 < len(steps) else ""
        before = {"location": location, "inventory": list(inventory)}
        if action.startswith("go to "):
            place = action[6:]
            kind = re.sub(r"\s*\d+$", "", place)
            if planned and not inventory:
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
                thought = _carrying(inventory[-1].rsplit(" ", 1)[0], record["task_type"], place, nxt, transformed,
                                    planned, receptacle)
            location = place
        elif action.startswith("take "):
            item = re.match(r"take (.+?) from", action).group(1)
            if planned and not inventory:
                ttype = "put" if placed else record["task_type"]  # the second object of puttwo: put it, done
                thought = f"Looking for {_an(obj)}: {item} is here. I take it, then {_rest_of_task(ttype, receptacle)}."
            else:
                thought = f"I see {item} here. I take it."
            inventory.append(item)
        elif action.startswith("open "):
            thought = (f"The {location} is closed. I open it to put the {inventory[-1].rsplit(' ', 1)[0]} in."
                       if planned and inventory else f"The {location} is closed. I open it to look inside.")
        elif action.startswith(("heat ", "cool ", "clean ")):
            verb, rest = action.split(" ", 1)
            thought = f"I {verb} the {rest.split(' with ')[0]} with {rest.split(' with ')[1]}."
            transformed = True
        elif action.startswith("move "):
            item = re.match(r"move (.+?) to", action).group(1)
            # "planned": the target's state first, as the last observation gives it (closed ones were opened).
            thought = (f"The {location} is open. I put the {item} in/on {location}." if planned
                       else f"I put the {item} in/on {location}.")
            if item in inventory:
                inventory.remove(item)
                placed += 1
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


def demo_turns(agent: str, record: dict, thoughts: str = "plain") -> list[tuple[str, str]]:
    """(answer, observation) turns of a demonstration, ready for Agent.messages (`thoughts`: see annotate)."""
    return [(answer(agent, record["task"], s), s["observation"]) for s in annotate(record, thoughts)]
