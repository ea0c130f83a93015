import pytest

from ragdistill.method.agents import HINT_BEGIN, HINT_END, REACT, STATEACT, get_agent, hint_block, load_fewshot, parse_action
from ragdistill.benchmarks.alfworld.env import TYPE_ORDER, is_reserved
from ragdistill.miniature.demos import annotate, answer


@pytest.mark.parametrize(
    "text, action, ok",
    [
        ("think: the mug may be on the desk\naction: go to desk 1", "go to desk 1", True),
        ("goal: x\nlocation: y\ninventory: nothing\nthought: z\naction: take mug 1 from desk 1", "take mug 1 from desk 1", True),
        ("> Action: open drawer 2", "open drawer 2", True),
        ("action: go to desk 1\naction: go to desk 2", "go to desk 2", True),
        ("I think I should go to desk 1", "I think I should go to desk 1", False),
        ("go to shelf 3", "go to shelf 3", True),
        ("hmm\nput mug 1 in/on desk 1", "put mug 1 in/on desk 1", True),
        ("", "", False),
    ],
)
def test_parse_action(text, action, ok):
    parsed = parse_action(text)
    assert (parsed.action, parsed.parsed) == (action, ok)


def test_hint_block_is_delimited_and_worded_the_same():
    block = hint_block(["Open {receptacle} before looking inside.", "Heat with microwave."])
    assert block.startswith(HINT_BEGIN) and block.endswith(HINT_END)
    assert "prefer the observation" in block and "- Heat with microwave." in block


@pytest.mark.parametrize("agent", [REACT, STATEACT], ids=lambda a: a.name)
def test_system_prompt_has_two_examples_of_the_task_type(agent):
    for task_type in TYPE_ORDER:
        prompt = agent.system_prompt(task_type)
        assert prompt.count("Example ") == 2 and HINT_BEGIN not in prompt
    bare = agent.system_prompt("heat", hints=["Use {appliance}."], fewshot=False)
    assert "Example" not in bare and HINT_BEGIN in bare


def test_fewshot_examples_come_from_reserved_train_games():
    for name in ("react", "stateact"):
        examples = load_fewshot(name)
        assert set(examples) == set(TYPE_ORDER)
        for task_type, items in examples.items():
            assert len(items) == 2
            for ex in items:
                assert ex["game_id"].startswith("train/") and is_reserved(ex["game_id"])
                assert all(parse_action(s["answer"]).parsed for s in ex["steps"])


def test_fewshot_actions_win_their_games(alfworld_root):
    from ragdistill.benchmarks.alfworld.env import AlfworldEnv

    for task_type, items in load_fewshot("react").items():
        for ex in items:
            env = AlfworldEnv(ex["game_id"])
            observation, _ = env.reset()
            assert observation == ex["observation"]
            for s in ex["steps"]:
                step = env.step(parse_action(s["answer"]).action)
                assert step.observation == s["observation"]
            assert step.won, ex["game_id"]
            env.close()


def test_messages_keep_the_whole_episode_with_the_room_description():
    chat = REACT.messages("put", "You are in the middle of a room. ...\n\nYour task is to: put a mug in desk.",
                          [("think: a\naction: go to desk 1", "You arrive at desk 1.")], fewshot=False)
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    assert chat[1]["content"].startswith("You are in the middle of a room.")


def test_stateact_answer_tracks_location_and_inventory():
    record = {
        "game_id": "train/pick_and_place_simple-Mug-None-Desk-1/trial_x",
        "task_type": "put",
        "task": "put a mug in desk.",
        "steps": [
            {"action": "go to shelf 1", "observation": "You arrive at shelf 1. On the shelf 1, you see a mug 1."},
            {"action": "take mug 1 from shelf 1", "observation": "You pick up the mug 1 from the shelf 1."},
            {"action": "go to desk 1", "observation": "You arrive at desk 1."},
            {"action": "move mug 1 to desk 1", "observation": "You move the mug 1 to the desk 1."},
        ],
    }
    steps = annotate(record)
    assert [s["location"] for s in steps] == ["the middle of the room", "shelf 1", "shelf 1", "desk 1"]
    assert [s["inventory"] for s in steps] == [[], [], ["mug 1"], ["mug 1"]]
    text = answer("stateact", record["task"], steps[3])
    assert "inventory: mug 1" in text and text.endswith("action: move mug 1 to desk 1")
    with pytest.raises(ValueError):
        get_agent("reflexion")


def test_grounded_thoughts_name_the_object_then_what_the_last_visit_found():
    record = {
        "game_id": "train/heat_then_place_in_recep-Egg-None-GarbageCan-1/trial_x",
        "task_type": "heat",
        "task": "heat some egg and put it in garbagecan.",
        "guides": ["countertop"],
        "steps": [
            {"action": "go to countertop 1", "observation": "You arrive at countertop 1. On the countertop 1, you see a tomato 1."},
            {"action": "go to fridge 1", "observation": "You arrive at fridge 1. The fridge 1 is closed."},
            {"action": "open fridge 1", "observation": "You open the fridge 1. In it, you see a egg 2, and a potato 1."},
            {"action": "take egg 2 from fridge 1", "observation": "You pick up the egg 2 from the fridge 1."},
            {"action": "go to microwave 1", "observation": "You arrive at microwave 1."},
        ],
    }
    plain = [s["thought"] for s in annotate(record)]
    searching = [
        "Looking for an egg. A rule says to search the countertops early. I will check countertop 1.",
        "Looking for an egg: none here. I will check fridge 1.",
        "The fridge 1 is closed. I open it to look inside.",
    ]
    assert plain[4] == "I have the egg. To heat it, I go to microwave 1."
    # Plain thoughts are the default (the smoke model and the few-shot examples are written with them).
    assert plain[1] == "An egg could be on or in fridge 1. I will look there." and plain[3] == "I see egg 2 here. I take it."
    record["steps"] += [
        {"action": "heat egg 2 with microwave 1", "observation": "You heat the egg 2 using the microwave 1."},
        {"action": "go to garbagecan 1", "observation": "You arrive at garbagecan 1."},
        {"action": "move egg 2 to garbagecan 1", "observation": "You move the egg 2 to the garbagecan 1."},
    ]
    planned = [s["thought"] for s in annotate(record, "planned")]
    assert planned[:3] == searching  # each search step names the object sought, then what the visit showed
    assert planned[3:7] == [
        "Looking for an egg: egg 2 is here. I take it, then heat it with the microwave, then put it in the garbagecan.",
        "The egg is not heated yet. I go to microwave 1 to heat it.",
        "I heat the egg 2 with microwave 1.",
        "The egg is heated. Now I take it to garbagecan 1.",
    ]
    assert planned[7] == "The garbagecan 1 is open. I put the egg 2 in/on garbagecan 1."
    with pytest.raises(ValueError, match="unknown thoughts"):
        annotate(record, "terse")


def test_every_agent_cuts_its_answers_at_one_length():
    """A lockstep batch mixes agents under one token limit and an asynchronous episode uses its own agent's: one
    limit for all keeps the two giving the same episodes."""
    from ragdistill.method.agents import get_agent

    limits = {get_agent(name, env).max_new_tokens for name in ("react", "stateact") for env in ("alfworld", "webshop")}
    assert limits == {128}
