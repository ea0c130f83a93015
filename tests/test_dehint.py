"""Hint removal: examples keep the inference format minus the hints, and the leak check catches planted hints."""

import pytest

from ragdistill.method.agents import HINT_BEGIN, get_agent
from ragdistill.benchmarks.alfworld.env import list_games
from ragdistill.method.dehint import LeakError, build_examples, episode_messages, find_leaks, leak_check

HINTS = ["Heat the {object} with the microwave before you move it to the {receptacle}.",
         "Open a closed receptacle before searching it; closed ones hide the objects inside."]
ROOM = "You are in the middle of a room. Looking quickly around you, you see a countertop 1, a microwave 1."


def _teacher_record(game, won=True, output="think: I go.\naction: go to countertop 1"):
    task = "heat some apple and put it in fridge."
    steps = [{"output": output, "action": "go to countertop 1", "observation": "You arrive at countertop 1.",
              "valid": True, "parsed": True, "prompt_tokens": 1, "completion_tokens": 1}] * 2
    return {"game_id": game.game_id, "task_type": game.task_type, "agent": "react", "condition": "hints", "seed": 0,
            "won": won, "steps": 2, "stop_reason": "won", "task": task, "hints": HINTS, "split": game.split,
            "first_observation": f"{ROOM}\n\nYour task is to: {task}", "trajectory": steps}


@pytest.fixture(scope="module")
def heat_game(alfworld_root):
    return next(g for g in list_games("train") if g.task_type == "heat")


def test_examples_are_the_inference_chat_without_the_hint_block(heat_game, smoke_model):
    record = _teacher_record(heat_game)
    examples, report = build_examples([record], "distilled", smoke_model.tokenizer, HINTS)
    assert report.examples == 1 and report.episodes == 1
    messages = examples[0]["messages"]
    teacher_chat = episode_messages(record, record["hints"], fewshot=False)
    assert HINT_BEGIN in teacher_chat[0]["content"] and HINT_BEGIN not in messages[0]["content"]
    assert messages[0]["content"] == get_agent("react").system_prompt("heat", None, fewshot=False)
    assert messages[1:] == teacher_chat[1:]  # the first observation (room included) and every turn unchanged
    assert messages[1]["content"].startswith(ROOM)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    ids = smoke_model.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert examples[0]["n_tokens"] == len(ids)


def test_few_shot_examples_are_kept_only_when_asked(heat_game, smoke_model):
    record = _teacher_record(heat_game)
    with_fewshot, _ = build_examples([record], "distilled", smoke_model.tokenizer, HINTS, fewshot=True)
    without, _ = build_examples([record], "distilled", smoke_model.tokenizer, HINTS, fewshot=False)
    assert "Example 1:" in with_fewshot[0]["messages"][0]["content"]
    assert "Example 1:" not in without[0]["messages"][0]["content"]


@pytest.mark.parametrize(
    "plant",
    [
        lambda m: m[0].update(content=m[0]["content"] + "\n- " + HINTS[1]),  # a hint left in the system prompt
        lambda m: m[1].update(content=m[1]["content"] + " " + HINT_BEGIN),  # a delimiter
        # the placeholder-filled form, in an answer
        lambda m: m[2].update(content="Heat the apple with the microwave before you move it to the fridge."),
    ],
    ids=["hint text", "delimiter", "filled placeholders"],
)
def test_the_leak_check_catches_a_planted_hint(heat_game, smoke_model, plant):
    examples, _ = build_examples([_teacher_record(heat_game)], "distilled", smoke_model.tokenizer, HINTS)
    assert leak_check(examples, HINTS)["leaks"] == 0
    obj, rec = heat_game.task_folder.split("-")[1].lower(), heat_game.task_folder.split("-")[3].lower()
    messages = examples[0]["messages"]
    plant(messages)
    messages[2]["content"] = messages[2]["content"].replace("apple", obj).replace("fridge", rec)
    with pytest.raises(LeakError, match="1 student example"):
        leak_check(examples, HINTS)


def test_an_evaluation_game_is_refused(alfworld_root, smoke_model):
    game = list_games("valid_unseen")[0]
    examples, _ = build_examples([_teacher_record(game)], "sft", smoke_model.tokenizer, HINTS)
    with pytest.raises(LeakError, match="1 evaluation or reserved game"):
        leak_check(examples, HINTS)


def test_answers_that_quote_a_hint_are_dropped_and_counted(heat_game, smoke_model):
    record = _teacher_record(heat_game, output="think: " + HINTS[1] + "\naction: open microwave 1")
    examples, report = build_examples([record, _teacher_record(heat_game, won=False)], "distilled",
                                      smoke_model.tokenizer, HINTS)
    assert examples == [] and report.echoed_hints == 1 and report.not_won == 1
    assert find_leaks([{"content": "nothing here"}], heat_game.game_id, HINTS) == []


def test_overlong_examples_are_dropped_or_kept_whole_never_cut(heat_game, smoke_model):
    record = _teacher_record(heat_game)
    full, _ = build_examples([record], "distilled", smoke_model.tokenizer, HINTS)
    n = full[0]["n_tokens"]
    dropped, report = build_examples([record], "distilled", smoke_model.tokenizer, HINTS, max_length=n - 1)
    assert dropped == [] and report.overlong == report.overlong_dropped == 1
    kept, report = build_examples([record], "distilled", smoke_model.tokenizer, HINTS, max_length=n - 1, overlong="keep")
    assert report.overlong == 1 and report.overlong_dropped == 0
    assert kept[0]["messages"] == full[0]["messages"] and kept[0]["n_tokens"] == n
