import re

import pytest

from ragdistill.run.config import ConfigError, TourConfig
from ragdistill.models.profiles import UnknownProfileError, get_profile


def test_defaults_are_valid(outputs):
    cfg = TourConfig.from_params({})
    assert cfg.profile == "smoke" and cfg.env == "alfworld" and cfg.resolved_split == "valid_seen"  # a design split
    assert re.fullmatch(r"smoke-\d{8}-\d{6}", cfg.run_name) and cfg.run == cfg.run_name  # as `make run` names runs


def test_an_unnamed_run_continues_the_newest_make_run_run(outputs):
    for name in ("cpu-20260101-090000", "cpu-20260102-090000", "cpu-webshop-20260103-090000", "cpu-mine", "gpu-7b-x"):
        (outputs / "runs" / name).mkdir(parents=True)
    assert TourConfig.from_params({"profile": "cpu"}).run_dir == outputs / "runs" / "cpu-20260102-090000"
    assert TourConfig.from_params({"profile": "cpu", "env": "webshop"}).run == "cpu-webshop-20260103-090000"
    assert TourConfig.from_params({"profile": "cpu", "run": "cpu-mine"}).run == "cpu-mine"
    fresh = TourConfig.from_params({"profile": "gpu-7b"}).run
    assert re.fullmatch(r"gpu-7b-\d{8}-\d{6}", fresh) and not (outputs / "runs" / fresh).exists()


def test_an_unnamed_run_is_the_folder_of_the_chain(outputs):
    from ragdistill.run.pipeline import run_chain

    chain = run_chain("smoke", only=["no-such-stage"])  # names and creates the run folder, plays nothing
    assert TourConfig.from_params({"profile": "smoke"}).run_dir == chain


def test_auto_profile_is_cpu_or_the_gpu_profile_with_cuda(outputs, monkeypatch):
    import torch

    from ragdistill.models.profiles import default_profile

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_profile() == "cpu" and TourConfig.from_params({"profile": "auto"}).profile == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = TourConfig.from_params({"profile": "auto"})
    assert cfg.profile == default_profile() == "gpu-7b" and cfg.run.startswith("gpu-7b-")


def test_env_picks_the_benchmark_defaults():
    from ragdistill.run.config import EvalConfig, FailureConfig, HintConfig
    from ragdistill.run.config import StudentConfig

    web = {"env": "webshop"}
    assert TourConfig.from_params(web).resolved_split == "train"  # test is the result split
    assert EvalConfig.from_params(web).resolved_split == "test"
    assert FailureConfig.from_params(web).step_limit == 15 and FailureConfig.from_params({}).step_limit == 50
    assert HintConfig.from_params(web).hints_per_failure == 2 and HintConfig.from_params({}).hints_per_failure == 4
    assert TourConfig.from_params(web).run_name.startswith("smoke-webshop-")
    gpu = {"profile": "gpu-7b"}
    assert (StudentConfig.from_params({**gpu, **web}).rank, StudentConfig.from_params({**gpu, **web}).alpha) == (16, 32)
    assert (StudentConfig.from_params(gpu).rank, StudentConfig.from_params(gpu).alpha) == (64, 128)
    with pytest.raises(ConfigError, match="env='webshp'"):
        TourConfig.from_params({"env": "webshp"})
    with pytest.raises(ConfigError, match="evaluate webshop on 'test'"):
        EvalConfig.from_params({**web, "split": "valid_unseen"})


def test_stages_of_a_run_must_share_the_env(tmp_path, monkeypatch):
    from ragdistill.run.config import FailureConfig, HintConfig

    monkeypatch.setenv("RAGDISTILL_OUTPUTS", str(tmp_path))
    first = FailureConfig.from_params({"run": "mixed"})
    first.save()
    (first.stage_dir / "episodes.jsonl").write_text("")
    with pytest.raises(ConfigError, match="played alfworld in stage 01_failures"):
        HintConfig.from_params({"run": "mixed", "env": "webshop"}).input_file("01_failures", "episodes.jsonl")
    from ragdistill.run.config import DehintConfig, StudentConfig

    dehint = DehintConfig.from_params({"run": "mixed"})
    dehint.save()
    (dehint.stage_dir / "sft.jsonl").write_text("")
    with pytest.raises(ConfigError, match="played alfworld in stage 04_dehint"):
        StudentConfig.from_params({"run": "mixed", "env": "webshop"}).examples_file("sft")


def test_unknown_parameter_is_rejected_with_a_suggestion():
    with pytest.raises(ConfigError) as err:
        TourConfig.from_params({"profil": "cpu"})
    msg = str(err.value)
    assert "unknown parameter 'profil'" in msg and "did you mean 'profile'" in msg
    assert "Known parameters:" in msg


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"game_index": "3"}, "game_index='3' should be int"),
        ({"game_index": True}, "should be int, not bool"),
        ({"seed": 1.5}, "seed=1.5 should be int"),
        ({"load_4bit": "yes"}, "load_4bit='yes' should be"),
        ({"split": "test"}, "split='test': choose one of train, valid_seen, valid_unseen"),
        ({"split": "valid_unseen"}, "split='valid_unseen' gives the result and is played by stage 06 alone"),
        ({"run": "../elsewhere"}, "must be a plain folder name"),
    ],
)
def test_wrong_types_and_values_are_rejected(params, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        TourConfig.from_params(params)
    assert fragment in str(err.value)


def test_optional_bool_accepts_none_and_bool():
    assert TourConfig.from_params({"load_4bit": None}).load_4bit is None
    assert TourConfig.from_params({"load_4bit": True}).load_4bit is True


def test_unknown_profile_is_one_clear_paragraph():
    with pytest.raises(UnknownProfileError) as err:
        TourConfig.from_params({"profile": "gpu-70b"})
    msg = str(err.value)
    assert "\n" not in msg
    assert "Unknown profile 'gpu-70b'" in msg
    for name in ("smoke", "cpu", "gpu-7b", "gpu-14b"):
        assert name in msg
    assert get_profile("gpu-7b").model_id == "Qwen/Qwen2.5-7B-Instruct"


def test_from_globals_takes_plain_values_only():
    import math

    namespace = {"profile": "smoke", "run": "r", "game_index": 2, "math": math, "TourConfig": TourConfig, "_x": 1}
    cfg = TourConfig.from_globals(namespace)
    assert cfg.game_index == 2
    with pytest.raises(ConfigError, match="restart the kernel"):
        TourConfig.from_globals({**namespace, "observation": "text"})


PARAMS = 'profile = "smoke"\nenv = "alfworld"\nrun = "tour"\nseed = 0\ngame_index = 0\nsplit = ""  # empty: the evaluation split\n'
CONFIG = "from ragdistill.run.config import TourConfig\n\ncfg = TourConfig.from_globals(globals())\n"


def test_the_config_cell_runs_again_after_later_cells(outputs):
    """JupyterLab: edit a parameter, run from the parameters cell down; the later cells' variables do not count."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.reset()

    def run(source: str):
        result = shell.run_cell(source, store_history=True)
        if result.error_in_exec:
            raise result.error_in_exec
        return shell.user_ns

    assert run(PARAMS) and run(CONFIG)["cfg"].game_index == 0
    run("picked = ['a hint']\nsplit = 'valid_seen'\nenv = object()\nseed = 'x'")  # later cells
    assert run(PARAMS.replace("game_index = 0", "game_index = 3")) and run(CONFIG)["cfg"].game_index == 3
    assert shell.user_ns["cfg"].split == "" and shell.user_ns["cfg"].env == "alfworld" and shell.user_ns["cfg"].seed == 0
    assert run(CONFIG)["cfg"].game_index == 3  # the config cell alone, again: the parameters cell's last run
    # papermill's injected cell follows the parameters cell and wins; a misspelt name in it is reported
    assert run(PARAMS) and run('# Parameters\ngame_index = 5\n') and run(CONFIG)["cfg"].game_index == 5
    run(PARAMS + "gmae_index = 1\n")
    with pytest.raises(ConfigError, match="unknown parameter 'gmae_index'.*Fix the parameters cell"):
        run(CONFIG)
    assert run(PARAMS) and run(CONFIG)["cfg"].game_index == 0  # fixed: no kernel restart needed
    run("game_index = 7")  # a stray cell of assignments is not the parameters cell
    assert run(CONFIG)["cfg"].game_index == 0
    shell.reset()


def test_saved_config_lands_in_the_stage_folder(outputs):
    cfg = TourConfig.from_params({"run": "r1"})
    path = cfg.save()
    assert path == outputs / "runs" / "r1" / "00_tour" / "config.json"
    assert '"stage": "00_tour"' in path.read_text()


def test_every_benchmark_implements_the_whole_interface():
    """Every method the interface leaves to a benchmark (it raises NotImplementedError) is a benchmark's own; a
    method the interface implements for all (placebo: swap the names of placebo_vocabulary) may stay shared."""
    import inspect

    from ragdistill.benchmarks import BENCHMARKS, Benchmark

    methods = [n for n, v in vars(Benchmark).items() if callable(v) and not n.startswith("_")
               and "raise NotImplementedError" in inspect.getsource(v)]
    assert len(methods) >= 10 and "placebo_vocabulary" in methods and "placebo" not in methods
    for name, bench in BENCHMARKS.items():
        missing = [m for m in methods if getattr(type(bench), m) is getattr(Benchmark, m)]
        assert not missing, f"{name} lacks {missing}"
        assert bench.name == name and bench.eval_splits[0] in bench.splits and len(bench.types()) >= 5


def test_saving_says_which_settings_differ_from_the_stage_s_first_start(outputs, capsys):
    from ragdistill.run.config import FailureConfig

    FailureConfig.from_params({"run": "r2", "max_steps": 15, "fewshot": False}).save()  # as the chain on cpu
    FailureConfig.from_params({"run": "r2", "max_steps": 15, "fewshot": False}).save()
    assert capsys.readouterr().out == ""
    FailureConfig.from_params({"run": "r2"}).save()  # the notebook's own defaults
    assert "started with max_steps=15, fewshot=False; this notebook has max_steps=0, fewshot=None" in capsys.readouterr().out
