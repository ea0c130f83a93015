from pathlib import Path

import pytest

from ragdistill.checks.nbcheck import check_kwargs, check_notebook
from ragdistill.run.pipeline import STAGES, declared_parameters, notebooks

NOTEBOOKS = notebooks()


def test_every_notebook_is_part_of_the_chain():
    names = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
    assert names and all(n in STAGES for n in names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_static_check(path):
    assert [str(p) for p in check_notebook(path)] == []


def test_static_check_catches_bad_notebooks(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook()
    nb.cells = [
        new_code_cell("profile = 'smoke'"),
        new_code_cell("from peft import LoraConfig\ncfg = LoraConfig(r=8, lora_alpa=16)"),
        new_code_cell("if False:\n    x = 1"),
        new_code_cell("def broken(:\n    pass"),
    ]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="x")]
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    problems = " | ".join(map(str, check_notebook(path)))
    assert "LoraConfig() has no parameter 'lora_alpa'" in problems
    assert "`if False:`" in problems and "does not parse" in problems and "committed with outputs" in problems
    (tmp_path / "notjson.ipynb").write_text("{")
    assert "not valid JSON" in str(check_notebook(tmp_path / "notjson.ipynb")[0])


def test_kwargs_check_knows_transformers_and_trl():
    import ast

    good = "from transformers import BitsAndBytesConfig\nBitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4')"
    bad = "import trl\ntrl.SFTConfig(output_dir='x', max_seq_length=10)"  # renamed to max_length in TRL 0.20
    assert check_kwargs(ast.parse(good), "good") == []
    assert "no parameter 'max_seq_length'" in str(check_kwargs(ast.parse(bad), "bad")[0])


def test_library_modules_pass_the_kwargs_check():
    from ragdistill.checks.nbcheck import check_module

    lib = Path(__file__).resolve().parents[1] / "lib" / "ragdistill"
    problems = [str(p) for m in sorted(lib.rglob("*.py")) for p in check_module(m)]
    assert problems == []


@pytest.mark.slow
def test_a_bad_parameter_fails_the_notebook_with_the_config_message(alfworld_root, outputs):
    import papermill as pm

    from ragdistill.run.pipeline import execute

    with pytest.raises(pm.PapermillExecutionError) as err:
        execute(NOTEBOOKS[0], outputs / "runs" / "bad", {"profile": "smoke", "gmae_index": 1})
    assert "unknown parameter 'gmae_index'" in str(err.value) and "did you mean 'game_index'" in str(err.value)


def test_chain_settings_go_to_the_notebooks_that_have_them(outputs):
    from ragdistill.run.pipeline import _setting, declared_parameters, run_chain

    names = {nb.stem: declared_parameters(nb) for nb in NOTEBOOKS}
    for stem in ("01_failure_collection", "03_teacher_generation", "06_evaluation"):
        assert {"backend", "base_url", "api_model", "concurrency", "server_args"} <= names[stem]
    assert "backend" not in names["05_student_training"] and "backend" not in names["02_hint_extraction"]
    with pytest.raises(ValueError, match="no notebook has a parameter named backnd"):
        run_chain("smoke", run="x", settings={"backnd": "vllm"})
    assert _setting("concurrency=64") == ("concurrency", 64) and _setting("base_url=http://h:8000/v1") == ("base_url", "http://h:8000/v1")


def test_parameters_cells_name_every_field_of_their_config():
    """The config cell finds the parameters cell by the names every one has (config.from_globals)."""
    import dataclasses

    from ragdistill.run import config
    from ragdistill.method.student.train import StudentConfig

    classes = [config.TourConfig, config.FailureConfig, config.HintConfig, config.TeacherConfig, config.DehintConfig,
               StudentConfig, config.EvalConfig]
    by_stage = {cls.STAGE: cls for cls in classes}
    for nb in NOTEBOOKS:
        fields = {f.name for f in dataclasses.fields(by_stage[STAGES[nb.stem]])}
        assert declared_parameters(nb) == fields, nb.name


def test_progress_bars_are_headless_in_the_chain_and_widgets_elsewhere():
    """pipeline.execute sets TEXT_PROGRESS for the kernels papermill starts: the project's bars and the libraries' own
    (tqdm.auto) are headless there; elsewhere tqdm.auto decides (widgets in JupyterLab, with ipywidgets installed)."""
    import os
    import subprocess
    import sys

    code = ("import tqdm.auto, ragdistill.run.progress as p; "
            "print(p.tqdm is p.HeadlessBar, tqdm.auto.tqdm is p.HeadlessBar, p.tqdm is tqdm.auto.tqdm)")
    env = {k: v for k, v in os.environ.items() if k != "RAGDISTILL_TEXT_PROGRESS"}
    plain = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    headless = subprocess.run([sys.executable, "-c", code], env={**env, "RAGDISTILL_TEXT_PROGRESS": "1"},
                              capture_output=True, text=True, check=True)
    assert headless.stdout.split() == ["True", "True", "True"] and plain.stdout.split() == ["False", "False", "True"]


def test_a_headless_bar_leaves_one_line_and_reports_its_state(tmp_path):
    """While it runs a headless bar draws nothing; it reports to the progress file (with the time left once it has
    a rate) and, when it ends, prints its final line to stdout: one line in the executed notebook."""
    import json
    import os
    import subprocess
    import sys

    events = tmp_path / "events.jsonl"
    code = ("import time\nfrom ragdistill.run.progress import tqdm\n"
            "for _ in tqdm(range(4), desc='base', unit='episodes', mininterval=0):\n    time.sleep(0.6)\n")
    run = subprocess.run([sys.executable, "-c", code], env={**os.environ, "RAGDISTILL_TEXT_PROGRESS": str(events)},
                         capture_output=True, text=True, check=True)
    assert run.stderr == "" and len(run.stdout.splitlines()) == 1
    assert run.stdout.startswith("base: 100%|") and "4/4" in run.stdout
    reported = [json.loads(line) for line in events.read_text().splitlines()]
    assert reported[0]["n"] == 0 and reported[-1]["closed"] and reported[-1]["n"] == 4
    assert {e["desc"] for e in reported} == {"base"} and {e["unit"] for e in reported} == {"episodes"}
    assert any(e["left"] is not None and e["left"] > 0 for e in reported[:-1])


STAGE_NOTEBOOKS = [nb for nb in NOTEBOOKS if nb.stem[:2] in {"01", "02", "03", "04", "05", "06"}]


def _shown(path: Path) -> list[tuple[int, list[str]]]:
    """Each `show.source(...)` call of a notebook: its cell index and the dotted names of what it shows, resolved
    through the imports of its own cell (a name the cell does not import resolves to nothing)."""
    import ast

    import nbformat

    found = []
    for index, cell in enumerate(nbformat.read(path, 4).cells):
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        names = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
            elif isinstance(node, ast.Import):
                names.update({a.asname or a.name: a.name for a in node.names})

        def dotted(expr) -> str | None:
            if isinstance(expr, ast.Name):
                return names.get(expr.id)
            if isinstance(expr, ast.Attribute):
                base = dotted(expr.value)
                return f"{base}.{expr.attr}" if base else None
            return None

        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and dotted(node.func) == "ragdistill.run.show.source":
                found.append((index, [dotted(arg) or ast.unparse(arg) for arg in node.args]))
    return found


@pytest.mark.parametrize("path", STAGE_NOTEBOOKS, ids=[p.name for p in STAGE_NOTEBOOKS])
def test_each_stage_notebook_shows_the_library_code_at_its_heart(path):
    """A cell shows the stage's core functions (show.source), introduced by prose; every name it shows still exists
    (a rename breaks this test), and what it shows stays short enough to read."""
    import nbformat

    from ragdistill.checks.nbcheck import _resolve
    from ragdistill.run.show import source_text

    cells = nbformat.read(path, 4).cells
    shown = _shown(path)
    assert shown, f"{path.name} shows none of the library's code (show.source)"
    for index, dotted in shown:
        assert cells[index - 1].cell_type == "markdown", f"{path.name} cell {index}: no prose introduces it"
        assert dotted and all(d.startswith("ragdistill.") for d in dotted), f"{path.name} cell {index} shows {dotted}"
        objects = [_resolve(d) for d in dotted]  # ImportError or AttributeError: renamed or gone
        text = source_text(*objects)
        assert all(f"def {d.rsplit('.', 1)[1]}(" in text or f"class {d.rsplit('.', 1)[1]}" in text for d in dotted)
        assert len(text.splitlines()) <= 45, f"{path.name} cell {index} shows {len(text.splitlines())} lines"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_each_notebook_imports_its_stage_from_one_module(path):
    """Besides its config (run.config) and the utilities (run.io, run.show), a notebook takes the library's code
    from one module, named after its stage folder, which lists each name it reads in `__all__`."""
    import ast
    import importlib

    import nbformat

    from ragdistill.run.paths import stage_module

    imported: dict[str, set[str]] = {}
    for cell in nbformat.read(path, 4).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ragdistill"):
                imported.setdefault(node.module, set()).update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("ragdistill"):
                        imported.setdefault(a.name, set())
    assert imported.pop("ragdistill.run.config", None), f"{path.name} takes no config from ragdistill.run.config"
    utilities = {"ragdistill.run.io": None, "ragdistill.run": {"show"}}
    for module, allowed in utilities.items():
        names = imported.pop(module, set())
        assert allowed is None or names <= allowed, f"{path.name} imports {names - allowed} from {module}"
    stage = stage_module(path.stem)
    assert set(imported) == {stage}, f"{path.name} imports its stage from {sorted(imported)}, not from {stage} alone"
    module = importlib.import_module(stage)
    assert imported[stage] <= set(module.__all__), f"{stage}.__all__ lacks {imported[stage] - set(module.__all__)}"
    assert all(getattr(module, name) is not None for name in module.__all__)


def test_stage_modules_follow_the_stage_folders():
    from ragdistill.run.paths import STAGES, stage_module

    assert [stage_module(nb) for nb in STAGES] == [
        "ragdistill.tour", "ragdistill.method.failures", "ragdistill.method.hints", "ragdistill.method.teacher",
        "ragdistill.method.dehint", "ragdistill.method.student", "ragdistill.method.eval"]


def test_show_source_reads_functions_and_methods():
    from ragdistill.method.agents import Agent
    from ragdistill.method.analysis import wilson
    from ragdistill.run.show import source, source_text

    import inspect

    text = source_text(wilson, Agent.system_prompt)
    line = inspect.getsourcelines(wilson)[1]
    assert text.startswith(f"# ragdistill.method.analysis.wilson  (ragdistill/method/analysis.py, line {line})\ndef wilson(")
    assert ".Agent.system_prompt  (ragdistill/method/agents.py, line " in text
    assert "\ndef system_prompt(self" in text  # dedented out of its class
    assert source(wilson).data == source_text(wilson)
    with pytest.raises(ValueError):
        source_text()
