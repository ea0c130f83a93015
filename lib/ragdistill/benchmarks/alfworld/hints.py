"""ALFWorld's heuristic hint extractor: typed hints for a failed episode from its trajectory and the game's expert
plan, written with placeholders (`{object}`, `{receptacle}`) as an LLM extractor is asked to (hints.py)."""

from __future__ import annotations

import re
from collections import Counter

from ragdistill.benchmarks.alfworld.env import NOTHING_HAPPENS, folder_names, get_game, task_type_of, walkthrough

# The appliance that each task type needs, and the verb that uses it.
APPLIANCE = {"heat": ("heat", "microwave"), "cool": ("cool", "fridge"), "clean": ("clean", "sinkbasin")}


# The heuristic extractor's templates that do not depend on the game (typed ones are built below).
GENERIC = {
    "search": "Go to each receptacle in turn, opening closed ones, until you see the {object}.",
    "take_seen": "As soon as you see the {object}, take it from that receptacle before going anywhere else.",
    "open": "Open a closed receptacle before searching it; closed ones hide the objects inside.",
    "only_target": "Take only the object the task names; leave other objects where they are.",
    "take_where_seen": "Take the {object} only from the receptacle where you just saw it, using the name shown there.",
    "hold_first": "Take the {object} first; you can only move an object you are holding.",
    "go_first": "Go to the {receptacle} before you move the {object} to it.",
    "finish": "Once the {object} is ready, go to the {receptacle} and move the {object} to it.",
    "format": "Answer with exactly one game command per turn, such as 'go to {receptacle}' or 'take {object} from {receptacle}'.",
    "no_repeat": "If a command changes nothing, do not repeat it; try another receptacle or another command.",
    "no_revisit": "Remember where you have looked; do not go back to a receptacle you already searched.",
    "second": "After placing the first {object}, search again for the second one and place it too.",
    "lamp_first": "Find and take the {object} first; using the lamp with empty hands does not finish the task.",
    "plan": "Check the task again and plan the steps it needs before you act.",
}


def appliance_hint(task_type: str) -> str | None:
    """The processing rule of heat/cool/clean tasks."""
    if task_type not in APPLIANCE:
        return None
    verb, appliance = APPLIANCE[task_type]
    return f"{verb.capitalize()} the {{object}} with the {appliance} before you move it to the {{receptacle}}."


def location_hint(obj: str, place: str) -> str:
    """Where an object of this kind was found by the expert."""
    return f"To find the {obj}, search the {place}s early; that is where it is often kept."


_LOCATION = re.compile(r"To find the (?P<obj>[a-z ]+), search the (?P<place>[a-z ]+)s early; that is where it is often kept\.")


def location_of(hint: str) -> tuple[str, str] | None:
    """(object, receptacle kind) of a `location_hint`, or None for any other hint."""
    m = _LOCATION.fullmatch(hint)
    return (m["obj"], m["place"]) if m else None


def task_names(game_id: str) -> dict[str, str]:
    """Object, target receptacle (and lamp for examine tasks) from the game's folder name."""
    obj, receptacle = folder_names(game_id)
    names = {"object": obj, "receptacle": receptacle}
    if task_type_of(game_id) == "examine":
        names["lamp"] = receptacle
    return names


def _kind(instance: str) -> str:
    """`countertop 2` -> `countertop`."""
    return re.sub(r"\s*\d+$", "", instance.strip())


def source_place(game_id: str, obj: str) -> str | None:
    """Where the expert found the object: the receptacle type of its first `take`."""
    for action in walkthrough(get_game(game_id)):
        m = re.match(rf"take {re.escape(obj)} \d+ from (.+)", action)
        if m:
            return _kind(m.group(1))
    return None


def diagnose(record: dict) -> list[str]:
    """Typed hints for one failed episode, from its trajectory and the game's expert plan (most telling first)."""
    ttype = record["task_type"]
    names = task_names(record["game_id"])
    obj = names["object"]
    steps = record["trajectory"]
    actions = [s["action"].lower() for s in steps]
    observations = [s["observation"] for s in steps]
    found: list[str] = []

    def add(text: str) -> None:
        if text not in found:
            found.append(text)

    picked = [a for a, o in zip(actions, observations) if a.startswith("take ") and o.startswith("You pick up")]
    picked_target = [a for a in picked if re.match(rf"take {re.escape(obj)} \d+", a)]
    saw_target = any(re.search(rf"\b{re.escape(obj)} \d+", o) for o in observations)
    invalid = sum(not s["valid"] for s in steps)
    nothing = sum(o.strip() == NOTHING_HAPPENS for o in observations)

    # The task's own step first: skipped processing, wrong appliance, the lamp never used.
    if ttype in APPLIANCE:
        verb, appliance = APPLIANCE[ttype]
        used = [a for a in actions if a.startswith(f"{verb} ")]
        if any(appliance not in a for a in used):
            add(f"{verb.capitalize()} the {{object}} with the {appliance} only; other appliances do nothing here.")
        done_at = next((i for i, a in enumerate(actions) if a.startswith(f"{verb} ") and appliance in a), None)
        moved_early = any(a.startswith("move ") and (done_at is None or i < done_at) for i, a in enumerate(actions))
        if picked_target and done_at is None:
            add(appliance_hint(ttype))
        elif picked_target and moved_early:
            add(f"Go to the {appliance} and {verb} the {{object}} there first, then bring it to the {{receptacle}}.")
    if ttype == "examine":
        lamp = names.get("lamp", "desklamp")
        if picked_target and not any(a.startswith("use ") for a in actions):
            add(f"Carry the {{object}} to the {lamp} and use the {lamp} while you hold it.")
        if not picked_target and any(a.startswith("use ") for a in actions):
            add(GENERIC["lamp_first"])
    if ttype == "puttwo":
        placed = sum(a.startswith("move ") and o.startswith("You move") for a, o in zip(actions, observations))
        if placed == 1:
            add(GENERIC["second"])
    # Finding the object.
    if not picked_target:
        place = source_place(record["game_id"], obj)
        if place:
            add(location_hint(obj, place))
        if saw_target:
            add(GENERIC["take_seen"])
        elif any("is closed" in o for o in observations) and not any(a.startswith("open ") for a in actions):
            add(GENERIC["open"])
        else:
            add(GENERIC["search"])
    wrong = [a for a in picked if a not in picked_target]
    if wrong:
        add(GENERIC["only_target"])
    # Handling mistakes.
    for i, (a, o) in enumerate(zip(actions, observations)):
        if a.startswith("take ") and o.strip() == NOTHING_HAPPENS:
            add(GENERIC["take_where_seen"])
            break
    if any(a.startswith(("move ", "put ")) and o.strip() == NOTHING_HAPPENS for a, o in zip(actions, observations)):
        if not picked_target:
            add(GENERIC["hold_first"])
        else:
            add(GENERIC["go_first"])
    if picked_target and not any(a.startswith("move ") and o.startswith("You move") for a, o in zip(actions, observations)):
        add(GENERIC["finish"])
    # How the episode went wrong overall.
    if steps and invalid / len(steps) >= 0.5:
        add(GENERIC["format"])
    if record.get("stop_reason") == "repeated_action" or nothing >= 3:
        add(GENERIC["no_repeat"])
    visits = Counter(a for a, o in zip(actions, observations) if a.startswith("go to ") and o.startswith("You arrive"))
    if visits and max(visits.values()) >= 3:
        add(GENERIC["no_revisit"])
    if not found:
        add(GENERIC["plan"])
    return found
