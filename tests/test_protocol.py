"""The evaluation protocol: designs are chosen on train and valid_seen only; valid_unseen gives the result."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_warm_start_design_tool_refuses_the_result_split():
    """bench/warmstart_eval.py measures designs: it plays valid_seen by default and refuses valid_unseen."""
    script = str(ROOT / "bench" / "warmstart_eval.py")
    shown = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "valid_seen" in shown
    refused = subprocess.run([sys.executable, script, "--split", "valid_unseen"], capture_output=True, text=True)
    assert refused.returncode == 2 and "invalid choice: 'valid_unseen'" in refused.stderr
