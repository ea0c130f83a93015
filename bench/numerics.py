"""The smoke model built and both smoke chains run under several numerics: the weights' bytes differ, the figures do not.

Each setting builds the default smoke model from scratch into a cache of its own, in a process whose libraries start
with that setting (kernel set, MKL and oneDNN code paths, thread count), then runs both smoke chains under it and
compares their key figures with tests/reference/smoke_chain.json. It prints, per setting, the weights' hash, the behaviour id (numerics.behaviour), the smallest top-2 logit gap of the
probes, the number of figures that differ from the reference, and the build's time as a ratio to the first
setting's. Results go to bench/results/numerics.json as each setting finishes; a rerun skips the settings done.

    .venv/bin/python bench/numerics.py                 # every setting, two at a time (about 40 min on 2 cores)
    .venv/bin/python bench/numerics.py --only native   # one
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "numerics.json"

# name: (environment the processes start with, CPU threads)
SETTINGS: dict[str, tuple[dict[str, str], int]] = {
    "native": ({}, 1),  # whatever kernels this processor has (AVX-512 where it has it)
    "aten-default": ({"ATEN_CPU_CAPABILITY": "default"}, 1),  # torch's scalar kernels
    "mkl-compatible-sse4_2": ({"MKL_CBWR": "COMPATIBLE", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, 1),
    "two-threads": ({}, 2),
    "onednn-all": ({"ONEDNN_MAX_CPU_ISA": "ALL"}, 1),
    "avx2-pins": ({"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, 1),
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


def measure(name: str, work: Path) -> dict:
    """Build the smoke model under setting `name`, identify it, and check both smoke chains against the reference."""
    extra, threads = SETTINGS[name]
    folder = work / name
    env = environment(extra, threads, folder)
    python = sys.executable
    start = time.perf_counter()
    built = subprocess.run([python, "-m", "ragdistill.miniature.smoke", "--threads", str(threads)], env=env, cwd=ROOT,
                           capture_output=True, text=True, check=True)
    build_s = time.perf_counter() - start
    path = built.stdout.strip().splitlines()[-1]
    code = ("import json, sys; from ragdistill.checks.numerics import behaviour, weights_hash; "
            "b = behaviour(sys.argv[1]); print(json.dumps({'weights': weights_hash(sys.argv[1]), "
            "'behaviour': b['id'], 'margin': b['margin']}))")
    ident = json.loads(subprocess.run([python, "-c", code, path], env=env, cwd=ROOT, capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1])
    start = time.perf_counter()
    code = ("import json; from ragdistill.checks.regression import ENVS, key_figures, smoke_run; "
            "print(json.dumps({env: key_figures(smoke_run(env)) for env in ENVS}))")
    chains = subprocess.run([python, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    chains_s = time.perf_counter() - start
    figures = json.loads(chains.stdout.strip().splitlines()[-1])
    return {"env": extra, "threads": threads, **ident, "build_s": round(build_s, 1), "chains_s": round(chains_s, 1),
            "figures": figures}


def differ(result: dict) -> list[str]:
    """Every figure of a setting's two chains that differs from the committed reference."""
    from ragdistill.checks.regression import ENVS, differences, reference

    return [f"{env}.{line}" for env in ENVS for line in differences(result["figures"][env], reference(env))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(SETTINGS), help="just this setting (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="settings measured at once (default 2)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ragdistill-numerics"), help="caches and runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    todo = [n for n in (args.only or SETTINGS) if n not in results]

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
    print(f"{'setting':24} {'weights':16} {'behaviour':16} {'margin':>8} {'differ':>6} {'build x':>7}")
    for name, r in results.items():
        print(f"{name:24} {r['weights']:16} {r['behaviour']:16} {r['margin']:8.4f} {len(differ(r)):6d} "
              f"{r['build_s'] / first['build_s']:6.2f}")
        for line in differ(r):
            print(f"    {line}")
    weights = {r["weights"] for r in results.values()}
    ok = len({r["behaviour"] for r in results.values()}) == 1 and not any(differ(r) for r in results.values())
    print(f"{len(weights)} different weights in {len(results)} settings; {'every' if ok else 'NOT every'} setting "
          "answers the probes alike and gives the reference's figures")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
