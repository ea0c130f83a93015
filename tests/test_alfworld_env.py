import pytest

from ragdistill.benchmarks.alfworld.env import (
    NOTHING_HAPPENS,
    TYPE_ORDER,
    AlfworldEnv,
    balanced_sample,
    get_game,
    is_reserved,
    list_games,
    normalize_action,
    reserved_games,
    task_type_of,
    training_pool,
    walkthrough,
)


def test_split_sizes_and_per_type_counts(alfworld_root):
    assert [len(list_games(s)) for s in ("train", "valid_seen", "valid_unseen")] == [3553, 140, 134]
    per_type = {t: 0 for t in TYPE_ORDER}
    for g in list_games("valid_unseen"):
        per_type[g.task_type] += 1
    assert per_type == {"put": 24, "clean": 31, "heat": 23, "cool": 21, "examine": 18, "puttwo": 17}


def test_game_ids_are_relative_paths_and_stable(alfworld_root):
    game = list_games("valid_unseen")[0]
    assert game.game_id.startswith("valid_unseen/") and game.game_id.count("/") == 2
    assert get_game(game.game_id) == game
    assert game.path == alfworld_root / "json_2.1.1" / game.game_id / "game.tw-pddl"


@pytest.mark.parametrize(
    "folder, kind",
    [
        ("pick_and_place_simple-Mug-None-Desk-308", "put"),
        ("pick_clean_then_place_in_recep-Ladle-None-CounterTop-1", "clean"),
        ("pick_heat_then_place_in_recep-Cup-None-Fridge-1", "heat"),
        ("pick_cool_then_place_in_recep-Bowl-None-Shelf-1", "cool"),
        ("look_at_obj_in_light-CD-None-DeskLamp-308", "examine"),
        ("pick_two_obj_and_place-Vase-None-Safe-219", "puttwo"),
        ("train/pick_two_obj_and_place-Vase-None-Safe-219/trial_T1", "puttwo"),
    ],
)
def test_task_type_from_folder(folder, kind):
    assert task_type_of(folder) == kind


def test_unknown_task_folder_is_an_error():
    with pytest.raises(ValueError, match="not an ALFWorld task folder"):
        task_type_of("slice_and_eat-Apple-1")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("put mug 1 in/on coffeemachine 1", "move mug 1 to coffeemachine 1"),
        ("put mug 1 in coffeemachine 1", "move mug 1 to coffeemachine 1"),
        ("Put apple 2 on countertop 1.", "move apple 2 to countertop 1"),
        ("  go to   fridge 1 ", "go to fridge 1"),
        ("move mug 1 to desk 1", "move mug 1 to desk 1"),
        ("take mug 1 from desk 1", "take mug 1 from desk 1"),
    ],
)
def test_action_normalisation(raw, expected):
    assert normalize_action(raw) == expected


def test_reset_gives_room_and_task_and_no_walkthrough(alfworld_root):
    env = AlfworldEnv(list_games("valid_unseen")[0])
    observation, task = env.reset()
    assert observation.startswith("You are in the middle of a room.")
    assert "Your task is to: " + task in observation and task.endswith(".")
    assert "Welcome to TextWorld" not in observation
    assert "go to desk 1" in env.admissible_commands
    assert not any("walkthrough" in k for k in env._state.keys())  # the agent's side never gets the plan
    bad = env.step("I am thinking about the desk")
    assert bad.observation == NOTHING_HAPPENS and not bad.admissible and not bad.done
    env.close()


def test_old_put_syntax_wins_a_game(alfworld_root):
    game = next(g for g in list_games("valid_unseen") if g.task_type == "put")
    plan = walkthrough(game)
    old_style = [a.replace("move ", "put ", 1).replace(" to ", " in/on ", 1) if a.startswith("move ") else a for a in plan]
    assert old_style != plan
    env = AlfworldEnv(game)
    env.reset()
    steps = [env.step(a) for a in old_style]
    assert steps[-1].won and all(s.admissible for s in steps)
    env.close()


def test_walkthroughs_of_a_balanced_valid_unseen_sample_are_won(alfworld_root):
    # All 134 are replayed by `python bench/replay_walkthroughs.py`; here 2 per type.
    from ragdistill.miniature.walkthroughs import replay

    games = balanced_sample(list_games("valid_unseen"), 12, seed=0)
    results = [replay(g) for g in games]
    assert [r["won"] for r in results] == [True] * 12
    assert all(s["admissible"] for r in results for s in r["steps"])


def test_reserved_slice_is_a_tenth_of_train_and_disjoint(alfworld_root):
    reserved = {g.game_id for g in reserved_games()}
    pool = {g.game_id for g in training_pool()}
    assert not reserved & pool and len(reserved) + len(pool) == 3553
    assert 0.08 < len(reserved) / 3553 < 0.12
    assert not any(is_reserved(g.game_id) for g in list_games("valid_unseen"))


def test_balanced_sample_is_round_robin_and_reproducible(alfworld_root):
    a = balanced_sample(training_pool(), 12, seed=3)
    assert [g.task_type for g in a] == list(TYPE_ORDER) * 2
    assert [g.game_id for g in a] == [g.game_id for g in balanced_sample(training_pool(), 12, seed=3)]
    assert a != balanced_sample(training_pool(), 12, seed=4)


def test_walkthrough_is_the_stored_expert_plan(alfworld_root):
    # Two games' plans as alfworld 0.4.2's data holds them, copied from the game files once.
    unseen = get_game("valid_unseen/look_at_obj_in_light-AlarmClock-None-DeskLamp-308/trial_T20190908_222917_366542")
    assert walkthrough(unseen) == ["go to desk 2", "take alarmclock 1 from desk 2", "go to desk 1", "use desklamp 1"]
    train = get_game("train/look_at_obj_in_light-AlarmClock-None-DeskLamp-301/trial_T20190907_174127_043461")
    assert walkthrough(train) == ["go to dresser 1", "use desklamp 1", "take alarmclock 2 from dresser 1"]
