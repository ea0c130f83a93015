"""Run the notebook chain headlessly with papermill: `python -m ragdistill.run.pipeline --profile cpu`."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

from ragdistill.run.io import atomic_write_json
from ragdistill.run.paths import PROJECT_ROOT, STAGES, new_run_name, notebook_of, outputs_dir
from ragdistill.run.progress import format_seconds
from ragdistill.models.profiles import RECIPES, UnknownProfileError, default_profile, get_profile



# Sizes for the chain as `make run` executes it, per profile (the `chain` part of recipes/<profile>.yaml); a
# notebook's own defaults apply otherwise.
CHAIN_PARAMS: dict[str, dict[str, dict]] = {name: recipe["chain"] for name, recipe in RECIPES.items()}


def kernel_name() -> str:
    """The project's registered kernel when present (make venv registers it), else this Python's own."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("ragdistill")
        if Path(spec.argv[0]).exists():
            return "ragdistill"
    except NoSuchKernel:
        pass
    return "python3"


def notebooks(root: Path = PROJECT_ROOT / "notebooks") -> list[Path]:
    """The chain's notebooks that exist, in order."""
    return [p for p in sorted(root.glob("[0-9][0-9]_*.ipynb")) if p.stem in STAGES]


def kernel_config():
    """The local kernels' settings: IPC sockets (files only this user can open) where the OS has them, so no
    traffic goes over TCP, unencrypted, and the kernel has nothing to warn about; TCP on loopback elsewhere.

    The sockets sit in a private folder of each kernel's own: by default jupyter_client names them `kernel-ipc-1`,
    `-2`, ... in the working folder, so two runs started from one checkout (two test workers, a run beside a
    benchmark) could pick the same names and each talk to the other's kernel ("Invalid Signature")."""
    import tempfile

    from traitlets.config import Config

    config = Config()
    if os.name == "posix":
        config.KernelManager.transport = "ipc"
        folder = Path(tempfile.mkdtemp(prefix="ragdistill-kernel-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        config.KernelManager.ip = str(folder / "ipc")
    return config


def code_cells(notebook: Path) -> int:
    """How many code cells a run of the notebook executes (papermill adds one with the injected parameters)."""
    cells = json.loads(notebook.read_text())["cells"]
    return sum(c["cell_type"] == "code" and bool("".join(c["source"]).strip()) for c in cells) + 1


def execute(notebook: Path, run_dir: Path, parameters: dict, log_output: bool = False, out: TextIO | None = None) -> Path:
    """Execute one notebook into its stage folder; the executed copy sits beside the stage's artifacts. The stage's
    progress (cells, bars, time left) is drawn on `out` (stdout) while it runs."""
    import papermill as pm

    from ragdistill.run.live import StageStatus
    from ragdistill.run.progress import TEXT_PROGRESS

    stage_dir = run_dir / STAGES[notebook.stem]
    stage_dir.mkdir(parents=True, exist_ok=True)
    output = stage_dir / notebook.name
    events = run_dir / ".progress" / f"{STAGES[notebook.stem]}.jsonl"
    before = os.environ.get(TEXT_PROGRESS)
    # The kernel inherits it: its bars report to `events` and leave one line in the notebook, not a widget no one sees.
    os.environ[TEXT_PROGRESS] = str(events)
    try:
        with StageStatus(notebook.stem, events, code_cells(notebook), out=out) as status:
            pm.execute_notebook(
                str(notebook),
                str(output),
                parameters=parameters,
                kernel_name=kernel_name(),
                cwd=str(notebook.parent),
                log_output=log_output,
                progress_bar=False,
                config=kernel_config(),
                # Headless bars everywhere, before any library makes its own (transformers', datasets').
                extra_arguments=["--IPKernelApp.exec_lines=import ragdistill.run.progress"],
                on_cell_start=status.cell_started,
            )
    finally:
        if before is None:
            os.environ.pop(TEXT_PROGRESS, None)
        else:
            os.environ[TEXT_PROGRESS] = before
        events.unlink(missing_ok=True)
        if events.parent.is_dir() and not any(events.parent.iterdir()):
            events.parent.rmdir()
    return output


def declared_parameters(notebook: Path) -> set[str]:
    """The names a notebook's `parameters` cell assigns."""
    import ast

    cells = json.loads(notebook.read_text())["cells"]
    cell = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return set()
    tree = ast.parse("".join(cell["source"]))
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


def stage_done(run_dir: Path, notebook: Path) -> bool:
    """A stage is done when its metrics.json and its executed notebook both exist."""
    stage_dir = run_dir / STAGES[notebook.stem]
    return (stage_dir / "metrics.json").is_file() and (stage_dir / notebook.name).is_file()


def run_chain(profile: str, run: str | None = None, extra: dict | None = None, only: list[str] | None = None,
              env: str = "alfworld", settings: dict | None = None, per_stage: dict | None = None) -> Path:
    """Execute every notebook in order, skipping stages a resumed run already finished.

    `extra` goes to every notebook run; `settings` to each notebook whose parameters cell has the name (for
    example backend and base_url go to the stages that play episodes only); `per_stage` maps a notebook's name
    (`06_evaluation`) to parameters for it alone, over the recipe's chain. `profile="auto"`: cpu, or gpu-7b where
    a CUDA GPU is present (the notebooks' default too).
    """
    from ragdistill.benchmarks import check_env

    if profile == "auto":
        profile = default_profile()
        print(f"profile: {profile} (the default on this machine)")
    get_profile(profile)
    check_env(env)
    name = Path(run).name if run else new_run_name(profile, env)
    run_dir = outputs_dir() / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    status_file = run_dir / "pipeline.json"
    if status_file.exists():
        status = json.loads(status_file.read_text())
        if status.get("env", "alfworld") != env:
            raise ValueError(f"run {name!r} plays {status.get('env', 'alfworld')}, not {env}: resume it with that env")
        timings = status.get("seconds", {})
    settings = settings or {}
    unknown = set(settings) - set().union(*(declared_parameters(nb) for nb in notebooks()))
    if unknown:
        raise ValueError(f"no notebook has a parameter named {', '.join(sorted(unknown))}")
    per_stage = per_stage or {}
    by_name = {nb.stem: nb for nb in notebooks()}
    for stem, params in per_stage.items():
        if stem not in by_name:
            raise ValueError(f"per_stage: no notebook named {stem!r} (choose from {', '.join(by_name)})")
        if set(params) - declared_parameters(by_name[stem]):
            raise ValueError(f"{stem} has no parameter named {', '.join(sorted(set(params) - declared_parameters(by_name[stem])))}")
    for nb in notebooks():
        if only and nb.stem not in only and STAGES[nb.stem] not in only:
            continue
        if stage_done(run_dir, nb):
            print(f"[{name}] {nb.name}: done already, skipped")
            continue
        print(f"[{name}] {nb.name}", flush=True)
        start = time.perf_counter()
        declared = declared_parameters(nb)
        params = {"profile": profile, "env": env, "run": name, **CHAIN_PARAMS.get(profile, {}).get(nb.stem, {}),
                  **{k: v for k, v in settings.items() if k in declared}, **per_stage.get(nb.stem, {}), **(extra or {})}
        execute(nb, run_dir, params)
        timings[STAGES[nb.stem]] = round(time.perf_counter() - start, 1)
        print(f"[{name}] {nb.name}: done in {format_seconds(timings[STAGES[nb.stem]])}", flush=True)
        atomic_write_json(status_file, {"profile": profile, "env": env, "run": name, "seconds": timings})
    print_summary(run_dir, timings)
    return run_dir


def print_summary(run_dir: Path, timings: dict[str, float]) -> None:
    """The end of a run in the terminal: the result table, the stage times, and where the report is."""
    from ragdistill.run.report import result_text, write_report

    report = write_report(run_dir)
    result = result_text(run_dir)
    print()
    if result:
        print(result)
        print()
    if timings:
        print("time per stage: " + ", ".join(f"{stage} {format_seconds(s)}" for stage, s in timings.items())
              + f" (total {format_seconds(sum(timings.values()))})")
    print(f"report (every stage's tables and figures, opens in any browser): {report.html}")
    if report.figures:
        print(f"figures ({len(report.figures)} PNG files): {report.figures[0].parent}")
    print(f"metrics: {report.metrics}")
    print(f"run folder: {run_dir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="auto",
                        help="smoke, cpu, gpu-7b or gpu-14b; auto (the default): gpu-7b where a CUDA GPU is present, else cpu")
    parser.add_argument("--env", default="alfworld", help="alfworld or webshop")
    parser.add_argument("--run", default=None, help="name of a run folder under outputs/runs/ to resume")
    parser.add_argument("--only", nargs="*", help="run only these notebooks or stages")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a notebook parameter, for every stage that has it (e.g. --set backend=vllm); "
                        "VALUE is read as JSON when it parses, else as text")
    args = parser.parse_args(argv)
    try:
        settings = dict(_setting(s) for s in args.set)
        run_chain(args.profile, args.run, only=args.only, env=args.env, settings=settings)
    except (UnknownProfileError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _setting(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise ValueError(f"--set {text!r}: write NAME=VALUE")
    name, value = text.split("=", 1)
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value


if __name__ == "__main__":
    raise SystemExit(main())
