"""The chain's notebook kernels: their IPC sockets sit in a private folder of each kernel's own, so two runs started
from one checkout never pick the same socket names."""

import json
import os
import stat
from pathlib import Path

import pytest

from ragdistill.run.pipeline import kernel_config, kernel_name


def test_each_kernel_gets_a_private_socket_folder_of_its_own():
    if os.name != "posix":
        pytest.skip("IPC sockets are posix's; elsewhere the kernels use TCP on loopback")
    first, second = kernel_config(), kernel_config()
    folders = {Path(c.KernelManager.ip).parent for c in (first, second)}
    assert len(folders) == 2 and first.KernelManager.transport == "ipc"
    for folder in folders:
        assert folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) == 0o700  # only this user


def test_a_notebook_runs_on_it_and_leaves_no_socket_in_its_folder(tmp_path, monkeypatch):
    import papermill as pm

    notebook = tmp_path / "one.ipynb"
    cell = {"cell_type": "code", "id": "one", "metadata": {}, "execution_count": None, "outputs": [], "source": "x = 6 * 7\nprint(x)"}
    notebook.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    monkeypatch.chdir(tmp_path)
    out = pm.execute_notebook(str(notebook), str(tmp_path / "out.ipynb"), kernel_name=kernel_name(), progress_bar=False,
                              config=kernel_config(), cwd=str(tmp_path))
    assert out["cells"][0]["outputs"][0]["text"].strip() == "42"
    assert not list(tmp_path.glob("kernel-ipc*"))
