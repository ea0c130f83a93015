"""Key figures of a finished run, compared with committed reference values (the smoke chain's regression test).

The reference names the smoke model it was made with by its behaviour (numerics.behaviour: its greedy answers to a
fixed probe set). The smoke model is trained in float64 with its weights rounded to a grid after every step, so
every processor builds the same bytes, and it is played in float64, where no greedy choice is near a tie
(numerics.py). A different behaviour means the smoke model itself changed (its spec, a prompt, the training).
`python -m ragdistill.checks.regression --update` reruns the smoke chain on each benchmark and
rewrites its reference, printing what changed, so a change of results is always a deliberate, reviewed commit
(`make reference`); `--check` reruns them and says what differs from the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from ragdistill.run.io import atomic_write_json, read_jsonl
from ragdistill.run.paths import PROJECT_ROOT

REFERENCE = PROJECT_ROOT / "tests" / "reference" / "smoke_chain.json"  # {benchmark: key figures}
ENVS = ("alfworld", "webshop")


def _episodes(path_or_records) -> dict:
    eps = list(read_jsonl(path_or_records)) if isinstance(path_or_records, Path) else path_or_records
    return {
        "episodes": len(eps),
        "wins": sum(e["won"] for e in eps),
        "steps": sum(e["steps"] for e in eps),
        "prompt_tokens": sum(e["prompt_tokens"] for e in eps),
        "completion_tokens": sum(e["completion_tokens"] for e in eps),
        "invalid_actions": sum(e["invalid_actions"] for e in eps),
    }


def key_figures(run_dir: Path) -> dict:
    """Counts that follow from the parameters and the (deterministic) model; floats are left out on purpose."""
    run_dir = Path(run_dir)
    figures: dict = {}
    if (run_dir / "00_tour" / "metrics.json").is_file():
        from ragdistill.checks.numerics import behaviour

        model = json.loads((run_dir / "00_tour" / "metrics.json").read_text())["model"]
        figures["model"] = {"profile": model["profile"], "behaviour": behaviour(model["path"])["id"]}
    if (run_dir / "01_failures" / "episodes.jsonl").is_file():
        figures["01_failures"] = _episodes(run_dir / "01_failures" / "episodes.jsonl")
    if (run_dir / "02_hints" / "metrics.json").is_file():
        m = json.loads((run_dir / "02_hints" / "metrics.json").read_text())
        figures["02_hints"] = {"failures": m["failures"], "skipped": m["skipped"], "bank_size": m["bank_size"],
                               "per_type_kept": {t: v["kept"] for t, v in m["per_type"].items()}}
    if (run_dir / "03_teacher" / "episodes.jsonl").is_file():
        figures["03_teacher"] = _episodes(run_dir / "03_teacher" / "episodes.jsonl")
    if (run_dir / "04_dehint" / "metrics.json").is_file():
        m = json.loads((run_dir / "04_dehint" / "metrics.json").read_text())
        figures["04_dehint"] = {s: {"examples": m[s]["examples"], "tokens_total": m[s]["tokens_total"]}
                                for s in ("distilled", "sft")}
    if (run_dir / "05_student" / "metrics.json").is_file():
        m = json.loads((run_dir / "05_student" / "metrics.json").read_text())
        figures["05_student"] = {name: {"skipped": a["skipped"], "examples": a.get("examples", 0),
                                        "steps": a.get("steps", 0), "tokens": a.get("tokens", 0)}
                                 for name, a in sorted(m["adapters"].items())}
    if (run_dir / "06_eval" / "episodes.jsonl").is_file():
        eps = list(read_jsonl(run_dir / "06_eval" / "episodes.jsonl"))
        figures["06_eval"] = {}
        for cond in sorted({e["condition"] for e in eps}):
            figures["06_eval"][cond] = _episodes([e for e in eps if e["condition"] == cond])
    return figures


def differences(measured: dict, reference: dict, prefix: str = "") -> list[str]:
    """Every figure that differs, as `path: reference -> measured`."""
    out = []
    for key in sorted(set(measured) | set(reference)):
        a, b = reference.get(key), measured.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(b, a, path + ".")
        elif a != b:
            out.append(f"{path}: {a} -> {b}")
    return out


def smoke_run(env: str) -> Path:
    """The smoke chain on `env`, run into RAGDISTILL_OUTPUTS (a new temporary folder when unset)."""
    from ragdistill.run.pipeline import run_chain

    os.environ.setdefault("RAGDISTILL_OUTPUTS", tempfile.mkdtemp(prefix="ragdistill-reference-"))
    return run_chain("smoke", run=f"reference-{env}", env=env)


def reference(env: str) -> dict:
    """The committed reference figures of `env` ({} when there are none)."""
    return json.loads(REFERENCE.read_text()).get(env, {}) if REFERENCE.is_file() else {}


def update(run_dir: Path | None = None, env: str = "alfworld") -> list[str]:
    """Run the smoke chain on `env` (or take a finished run of it) and rewrite its reference; returns what changed."""
    figures = key_figures(run_dir or smoke_run(env))
    everything = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {}
    changed = differences(figures, everything.get(env, {}))
    atomic_write_json(REFERENCE, {**everything, env: figures})
    return changed


def check(run_dir: Path | None = None, env: str = "alfworld") -> list[str]:
    """Run the smoke chain on `env` (or take a finished run of it); every figure that differs from the reference."""
    return differences(key_figures(run_dir or smoke_run(env)), reference(env))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--update", action="store_true", help="rerun the smoke chain and rewrite the reference")
    parser.add_argument("--check", action="store_true", help="rerun the smoke chain and compare it with the reference "
                                                             "(exit 1 when a figure differs)")
    parser.add_argument("--env", choices=ENVS, action="append",
                        help="the benchmark whose reference to remake (default: every one)")
    parser.add_argument("--run-dir", type=Path, help="take the figures of this finished smoke run instead (one --env)")
    args = parser.parse_args(argv)
    if args.update and args.check:
        parser.error("--update or --check, not both")
    if not (args.update or args.check):
        parser.print_help()
        return 0
    envs = args.env or list(ENVS)
    if args.run_dir and len(envs) != 1:
        parser.error("--run-dir needs exactly one --env")
    failed = False
    for env in envs:
        changed = (update if args.update else check)(args.run_dir, env)
        print(f"reference: {REFERENCE} ({env})")
        print("\n".join(changed) if changed else "no figure changed" if args.update else "every figure as in the reference")
        failed |= args.check and bool(changed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
