"""Where the project, its caches and its run outputs live."""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def cache_dir() -> Path:
    """Project cache (built models, checkpoints): RAGDISTILL_CACHE or ~/.cache/ragdistill."""
    root = os.environ.get("RAGDISTILL_CACHE") or Path.home() / ".cache" / "ragdistill"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def outputs_dir() -> Path:
    """Root of everything runs write: RAGDISTILL_OUTPUTS or <project>/outputs."""
    root = os.environ.get("RAGDISTILL_OUTPUTS") or PROJECT_ROOT / "outputs"
    return Path(root).expanduser()


def data_dir() -> Path:
    """Small files the project ships itself (few-shot examples, configs)."""
    return PROJECT_ROOT / "data"


def run_tag(profile: str, env: str) -> str:
    """How a run's folder name starts: the profile, and the benchmark when it is not ALFWorld."""
    return profile if env == "alfworld" else f"{profile}-{env}"


def new_run_name(profile: str, env: str) -> str:
    """The folder name of a new run, as `make run` names it: `<profile>[-<env>]-<YYYYmmdd>-<HHMMSS>`."""
    return f"{run_tag(profile, env)}-{datetime.now():%Y%m%d-%H%M%S}"


def make_run_pattern(profile: str, env: str) -> str:
    """The regular expression of the run folder names `make run` gives this profile and env (new_run_name)."""
    return re.escape(run_tag(profile, env)) + r"-\d{8}-\d{6}"


def latest_run_name(profile: str, env: str) -> str | None:
    """The newest run folder under outputs/runs/ named as `make run` names them for this profile and env."""
    root = outputs_dir() / "runs"
    pattern = re.compile(make_run_pattern(profile, env))
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and pattern.fullmatch(p.name)) if root.is_dir() else []
    return names[-1] if names else None


def default_run_name(profile: str, env: str) -> str:
    """A notebook's run when it names none: the newest one `make run` started with this profile and env (so that
    stepping through the notebooks continues it), else a new one named the same way."""
    return latest_run_name(profile, env) or new_run_name(profile, env)


# notebook file stem -> the stage folder it writes (each stage reads earlier folders and writes only its own)
STAGES = {
    "00_environment_tour": "00_tour",
    "01_failure_collection": "01_failures",
    "02_hint_extraction": "02_hints",
    "03_teacher_generation": "03_teacher",
    "04_hint_removal": "04_dehint",
    "05_student_training": "05_student",
    "06_evaluation": "06_eval",
}


def stage_module(notebook: str) -> str:
    """The one module a notebook imports its stage from, named after its stage folder: ragdistill.method.<name>
    (failures, hints, teacher, dehint, student, eval), and ragdistill.tour for the tour, which is no stage of the
    method. Its config comes from run.config, its files are written through run.io."""
    name = STAGES[notebook].split("_", 1)[1]
    return "ragdistill.tour" if name == "tour" else f"ragdistill.method.{name}"


def notebook_of(stage: str) -> str:
    """The notebook stem that writes a stage folder."""
    return next((nb for nb, st in STAGES.items() if st == stage), stage)
