"""A finished run, readable without Jupyter: its result table in text, one HTML page of every executed notebook,
the figures as PNG files, and every stage's metrics in one file."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ragdistill.run.io import atomic_write_json, atomic_write_text
from ragdistill.run.paths import STAGES
from ragdistill.run.progress import format_seconds


@dataclass
class Report:
    """Where a run's report went."""

    html: Path
    figures: list[Path]
    metrics: Path


def result_text(run_dir: Path) -> str:
    """The paper-shaped table of stage 06 (conditions, success with its 95% interval, tokens per episode) and the
    paired tests, as text; empty when stage 06 has not written its metrics."""
    from ragdistill.method.eval.tables import CONDITIONS, LABELS, PAIRED_TESTS, paired_table

    path = run_dir / "06_eval" / "metrics.json"
    if not path.is_file():
        return ""
    metrics = json.loads(path.read_text())
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        parts = [f"Result: {metrics['env']} {metrics['split']}, {metrics['games']} games x {len(metrics['agents'])} "
                 f"agents ({', '.join(metrics['agents'])}), {metrics['episodes']} episodes"]
        if "intervals" in metrics:
            table = pd.DataFrame.from_dict(metrics["intervals"], orient="index")
            table = table.reindex([LABELS[c] for c in CONDITIONS if LABELS[c] in table.index])  # the paper's order
            keep = [c for c in ("episodes", "wins", "success %", "95% CI", "score", "tokens/episode", "mean steps")
                    if c in table.columns and (c != "score" or metrics["env"] == "webshop")]
            parts.append(table[keep].to_string())
        if metrics.get("paired"):
            parts.append("Paired tests (same games and agents; McNemar's exact test on the pairs only one side won):")
            order = [f"{a} vs {b}" for a, b in PAIRED_TESTS if f"{a} vs {b}" in metrics["paired"]]
            parts.append(paired_table({name: metrics["paired"][name] for name in order}).to_string())
        for condition, reason in (metrics.get("conditions_skipped") or {}).items():
            parts.append(f"{condition}: not played, {reason}")
    return "\n".join(parts)


def _executed(run_dir: Path) -> list[tuple[str, Path]]:
    return [(stage, run_dir / stage / f"{nb}.ipynb") for nb, stage in STAGES.items()
            if (run_dir / stage / f"{nb}.ipynb").is_file()]


def save_figures(run_dir: Path) -> list[Path]:
    """Every PNG figure of the executed notebooks, as figures/<stage>-<n>.png in the run folder."""
    folder = run_dir / "figures"
    for old in folder.glob("*.png"):  # a resumed run's figures replace the earlier ones
        old.unlink()
    written = []
    for stage, path in _executed(run_dir):
        cells = json.loads(path.read_text())["cells"]
        pngs = [o["data"]["image/png"] for c in cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        for i, png in enumerate(pngs, 1):
            folder.mkdir(exist_ok=True)
            target = folder / f"{stage}-{i}.png"
            target.write_bytes(base64.b64decode("".join(png) if isinstance(png, list) else png))
            written.append(target)
    return written


def combined_notebook(run_dir: Path):
    """One notebook of every executed stage in order, each under a heading with an anchor named after its stage."""
    import nbformat

    status_file = run_dir / "pipeline.json"
    status = json.loads(status_file.read_text()) if status_file.is_file() else {}
    seconds = status.get("seconds", {})
    executed = _executed(run_dir)
    rows = "\n".join(f"| [{stage}](#{stage}) | {format_seconds(seconds[stage]) if stage in seconds else ''} |"
                     for stage, _ in executed)
    intro = (f"# Run {run_dir.name}\n\nprofile: {status.get('profile', '?')}, benchmark: {status.get('env', '?')}\n\n"
             f"| stage | time |\n|---|---|\n{rows}\n")
    result = result_text(run_dir)
    if result:
        intro += "\n## Result\n\n```\n" + result + "\n```\n"
    combined = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(intro)])
    for stage, path in executed:
        nb = nbformat.read(path, as_version=4)
        combined.cells.append(nbformat.v4.new_markdown_cell(f'<a id="{stage}"></a>\n\n---\n\n*{path.name}*'))
        for cell in nb.cells:  # each notebook numbers its cells from cell-00: unique again with the stage in front
            if "id" in cell:
                cell.id = f"{stage}-{cell.id}"
            combined.cells.append(cell)
        combined.metadata.setdefault("kernelspec", nb.metadata.get("kernelspec", {}))
        combined.metadata.setdefault("language_info", nb.metadata.get("language_info", {}))
    return combined


def write_report(run_dir: Path) -> Report:
    """report.html (every executed notebook on one page, figures inside: any browser opens it), figures/*.png and
    metrics.json (each stage's metrics and the stage times) in the run folder."""
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter(template_name="lab").from_notebook_node(combined_notebook(run_dir))
    atomic_write_text(run_dir / "report.html", html)
    status_file = run_dir / "pipeline.json"
    status = json.loads(status_file.read_text()) if status_file.is_file() else {}
    metrics = {**status, "stages": {stage: json.loads((run_dir / stage / "metrics.json").read_text())
                                    for stage in STAGES.values() if (run_dir / stage / "metrics.json").is_file()}}
    atomic_write_json(run_dir / "metrics.json", metrics)
    return Report(run_dir / "report.html", save_figures(run_dir), run_dir / "metrics.json")
