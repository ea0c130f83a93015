"""What a headless run shows in the terminal: the live status of a stage, and no false alarm from the libraries."""

import io
import json
import os
import subprocess
import sys
import time

from ragdistill.run.live import StageStatus, bar_text, cell_summary, describe_bar


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAGDISTILL_TEXT_PROGRESS"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)


def test_bitsandbytes_missing_kernels_message_is_dropped_and_its_other_failures_still_show():
    """The record bitsandbytes' CPU backend logs when the optional `kernels` package is absent is dropped; the same
    failure for another reason, and any other warning of the library, still reach stderr."""
    code = """
import logging, ragdistill
log = logging.getLogger("bitsandbytes.backends.cpu.ops")
text = "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already `pip install kernels` and the kernels >= 0.11.1"
log.warning(text, ModuleNotFoundError("No module named 'kernels'"))
log.warning(text, ConnectionError("the Hub is unreachable"))
log.warning("another bitsandbytes problem")
"""
    err = _run_python(code).stderr
    assert "No module named 'kernels'" not in err
    assert "the Hub is unreachable" in err and "another bitsandbytes problem" in err


def test_peft_on_a_transformers_model_raises_no_is_gradient_checkpointing_warning():
    """get_peft_model reads the deprecated alias (a FutureWarning of transformers 5.23); other FutureWarnings show."""
    code = """
import warnings, ragdistill
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model
model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=2))
get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
warnings.warn("a FutureWarning of our own", FutureWarning)
"""
    err = _run_python(code).stderr
    assert "is_gradient_checkpointing" not in err and "a FutureWarning of our own" in err


def test_a_running_bar_reads_as_what_how_far_and_time_left():
    event = {"bar": "1-0", "desc": "base", "n": 31, "total": 48, "unit": "episodes", "elapsed": 125.0, "left": 151.0,
             "closed": False, "t": 1000.0}
    line = describe_bar(event, now=1000.0)
    assert line.startswith("base: 31/48 episodes |") and " 65%" in line and line.endswith("2:05 elapsed, 2:31 left")
    assert describe_bar(event, now=1010.0).endswith("2:15 elapsed, 2:21 left")  # drawn between two reports
    assert bar_text(0.0) == "|" + " " * 20 + "|" and bar_text(1.0) == "|" + "█" * 20 + "|"
    assert len(bar_text(0.65)) == 22
    assert cell_summary("# Play\nfrom x import y\n\nstats = run_rollouts(specs)\n") == "stats = run_rollouts(specs)"


def test_a_log_gets_each_cell_each_bar_with_its_time_left_and_its_end(tmp_path):
    """Not a terminal (a pipe, a file): a line when a cell starts, when a bar starts and first knows its time left,
    and when it ends."""
    import nbformat

    events = tmp_path / "events.jsonl"
    out = io.StringIO()
    with StageStatus("01_failure_collection", events, cells=2, out=out, interval=60) as status:
        status.cell_started(nbformat.v4.new_code_cell("from a import b\nstats = run_rollouts(specs)"), 1)
        t = time.time()
        for event in ({"n": 0, "left": None, "closed": False}, {"n": 3, "left": 30.0, "closed": False},
                      {"n": 6, "left": 20.0, "closed": False}, {"n": 12, "left": 0.0, "closed": True}):
            with open(events, "a") as f:
                f.write(json.dumps({"bar": "7-0", "desc": "base", "total": 12, "unit": "episodes", "elapsed": 4.0,
                                    "t": t, **event}) + "\n")
            time.sleep(1.2)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("01_failure_collection  starting the kernel")
    assert lines[1].endswith("cell 1/2: stats = run_rollouts(specs)")
    assert "base: 0/12 episodes" in lines[2] and lines[2].endswith("estimating time left")
    assert "base: 3/12 episodes" in lines[3] and lines[3].endswith("left") and "estimating" not in lines[3]
    assert lines[4].endswith("base: 12/12 episodes in 0:04") and len(lines) == 5
