"""The smoke model built and both smoke chains run under several numerics: without the grid the weights' bytes
differ; with it the model should answer alike and the chains give the reference's figures (measured per setting:
MKL's SSE4.2 path builds another model, see README "Numerics").

Each setting first builds a small spec without the grid (`grid_bits` None, 40 steps: the controls, in float64 and in
float32, which show whether the setting changes a plain build's bytes), then the default smoke model from scratch
into a cache of its own,
in a process whose libraries start with that setting (kernel set, MKL and oneDNN code paths, thread count), then runs
both smoke chains under it and compares their key figures with tests/reference/smoke_chain.json. It prints, per
setting, the controls' hashes, the model's weights hash, its behaviour id (numerics.behaviour), the smallest top-2
logit gap of the probes, the closest any weight came to a rounding midpoint, the number of figures that differ from
the reference, and the build's time as a ratio to the first setting's. Results go to bench/results/numerics.json
as each setting finishes; a rerun skips the settings done (building the float32 control of those measured without
it). A model already in a setting's cache folder is used as
it is (its build time comes from its smoke_build.json).

    .venv/bin/python bench/numerics.py                 # every setting, one at a time (about 30 min each on 2 cores)
    .venv/bin/python bench/numerics.py --only native   # one
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "numerics.json"

# name: (environment the processes start with, CPU threads)
SETTINGS: dict[str, tuple[dict[str, str], int]] = {
    "native": ({}, 2),  # whatever kernels this processor has (AVX-512 where it has it), as `make test` builds it
    "aten-default": ({"ATEN_CPU_CAPABILITY": "default"}, 2),  # torch's scalar kernels
    "mkl-compatible-sse4_2": ({"MKL_CBWR": "COMPATIBLE", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, 2),
    "one-thread": ({}, 1),
    "onednn-all": ({"ONEDNN_MAX_CPU_ISA": "ALL"}, 2),
}
NUMERIC_VARS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def environment(extra: dict[str, str], threads: int, folder: Path) -> dict[str, str]:
    """This process's environment without any numeric switch, then the setting's, a cache and outputs of its own."""
    env = {k: v for k, v in os.environ.items() if k not in NUMERIC_VARS}
    env.update(extra)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
                "RAGDISTILL_CACHE": str(folder / "cache"), "RAGDISTILL_OUTPUTS": str(folder / "outputs")})
    return env


def control_spec():
    """The control: a small spec without the grid (the numerics test's, 40 steps)."""
    from ragdistill.miniature.smoke import SmokeSpec

    return SmokeSpec(games_per_type=1, webshop_goals=2, train_steps=40, batch_tokens=2048, variants=1, chain_tasks=2,
                     chain_repeats=1, grid_bits=None)


def float32_control(name: str, work: Path) -> str:
    """The control spec built in float32 without the grid under setting `name`: the weights' hash. Float32 is what
    a processor's kernels change most visibly, so each setting shows here that it changes a plain build's bytes."""
    extra, threads = SETTINGS[name]
    folder = work / name
    env = environment(extra, threads, folder)
    control = folder / "control32"
    if not (control / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "ragdistill.miniature.smoke", "--threads", str(threads), "--spec",
                        json.dumps(asdict(control_spec())), "--dtype", "float32", "--dest", str(control)], env=env,
                       cwd=ROOT, capture_output=True, text=True, check=True)
    code = "import sys; from ragdistill.checks.numerics import weights_hash; print(weights_hash(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(control)], env=env, cwd=ROOT, capture_output=True, text=True,
                          check=True)
    return done.stdout.strip().splitlines()[-1]


def measure(name: str, work: Path) -> dict:
    """Build the control and the smoke model under setting `name`, identify them, and check both smoke chains
    against the reference."""
    extra, threads = SETTINGS[name]
    folder = work / name
    env = environment(extra, threads, folder)
    python = sys.executable
    control = folder / "control"
    if not (control / "config.json").is_file():
        subprocess.run([python, "-m", "ragdistill.miniature.smoke", "--threads", str(threads), "--spec",
                        json.dumps(asdict(control_spec())), "--dest", str(control)], env=env, cwd=ROOT,
                       capture_output=True, text=True, check=True)
    built = subprocess.run([python, "-m", "ragdistill.miniature.smoke", "--threads", str(threads)], env=env, cwd=ROOT,
                           capture_output=True, text=True, check=True)
    path = built.stdout.strip().splitlines()[-1]
    info = json.loads((Path(path) / "smoke_build.json").read_text())
    build_s = info["seconds"]
    code = ("import json, sys; from ragdistill.checks.numerics import behaviour, weights_hash; "
            "b = behaviour(sys.argv[1]); print(json.dumps({'weights': weights_hash(sys.argv[1]), "
            "'control_weights': weights_hash(sys.argv[2]), 'behaviour': b['id'], 'margin': b['margin']}))")
    ident = json.loads(subprocess.run([python, "-c", code, path, str(control)], env=env, cwd=ROOT, capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1])
    # The chains are the measurement: a run folder left by an earlier measurement would be resumed, not replayed.
    shutil.rmtree(folder / "outputs", ignore_errors=True)
    start = time.perf_counter()
    code = ("import json; from ragdistill.checks.regression import ENVS, key_figures, smoke_run; "
            "print(json.dumps({env: key_figures(smoke_run(env)) for env in ENVS}))")
    chains = subprocess.run([python, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    chains_s = time.perf_counter() - start
    figures = json.loads(chains.stdout.strip().splitlines()[-1])
    return {"env": extra, "threads": threads, **ident, "control32_weights": float32_control(name, work),
            "closest_to_a_midpoint": info["closest_to_a_midpoint"],
            "loss_last": info["loss_last"], "build_s": round(build_s, 1), "chains_s": round(chains_s, 1),
            "figures": figures}


def differ(result: dict) -> list[str]:
    """Every figure of a setting's two chains that differs from the committed reference."""
    from ragdistill.checks.regression import ENVS, differences, reference

    return [f"{env}.{line}" for env in ENVS for line in differences(result["figures"][env], reference(env))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(SETTINGS), help="just this setting (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="settings measured at once (default 1: two builds side "
                        "by side on 2 cores take as long as one after the other)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ragdistill-numerics"), help="caches and runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    todo = [n for n in (args.only or SETTINGS) if n not in results]
    for name in [n for n in results if "control32_weights" not in results[n]]:  # measured before the float32 control
        results[name]["control32_weights"] = float32_control(name, args.work)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(sorted(results.items())), indent=2) + "\n")
        tmp.replace(args.out)

    lock = threading.Lock()

    def one(name: str) -> None:
        result = measure(name, args.work)
        with lock:  # one writer at a time; the file is replaced whole, with what another run wrote meanwhile
            if args.out.is_file():
                results.update({k: v for k, v in json.loads(args.out.read_text()).items() if k not in results})
            results[name] = result
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(dict(sorted(results.items())), indent=2) + "\n")
            tmp.replace(args.out)
        print(f"{name}: done ({result['build_s']:.0f} s build, {result['chains_s']:.0f} s chains)", flush=True)

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        list(pool.map(one, todo))
    first = next(iter(results.values()), None)
    print(f"{'setting':24} {'float32 control':16} {'float64 control':16} {'weights':16} {'behaviour':16} {'margin':>8} "
          f"{'midpoint':>9} {'differ':>6} {'build x':>7}")
    for name, r in results.items():
        print(f"{name:24} {r['control32_weights']:16} {r['control_weights']:16} {r['weights']:16} {r['behaviour']:16} "
              f"{r['margin']:8.4f} {r['closest_to_a_midpoint']:9.1e} {len(differ(r)):6d} {r['build_s'] / first['build_s']:6.2f}")
        for line in differ(r):
            print(f"    {line}")
    controls32 = {r["control32_weights"] for r in results.values()}
    controls = {r["control_weights"] for r in results.values()}
    weights = {r["weights"] for r in results.values()}
    behaviours = {r["behaviour"] for r in results.values()}
    # What the suite and the reference rest on is the model's behaviour and the chains' figures, not its bytes.
    ok = len(behaviours) == 1 and not any(differ(r) for r in results.values())
    print(f"{len(results)} settings: {len(controls32)} different weights in float32 without the grid, {len(controls)} "
          f"in float64 without it, {len(weights)} with it, {len(behaviours)} behaviour(s); {'every' if ok else 'NOT every'}"
          " setting builds a model that answers the probes alike and gives the reference's figures")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
