"""Progress bars: widgets in JupyterLab (tqdm.auto, with ipywidgets), text lines in the chain's headless runs."""

from __future__ import annotations

import os

# Set by pipeline.execute for the kernels papermill starts: no one watches a widget there, and the executed notebook's
# text copy of one shows it as it was drawn, at 0%.
TEXT_PROGRESS = "RAGDISTILL_TEXT_PROGRESS"

if os.environ.get(TEXT_PROGRESS):
    from tqdm.std import tqdm
else:
    from tqdm.auto import tqdm

__all__ = ["TEXT_PROGRESS", "tqdm"]
