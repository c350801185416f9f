"""Write a run's results as JSON and as a Markdown report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.3f} ms"
    return f"{value:.3f} s"


def _series_rows(series: list[dict[str, Any]]) -> list[str]:
    rows = ["| measurement | median | min - max | CPU median | n |", "|---|---:|---:|---:|---:|"]
    for s in series:
        wall, unit = s["wall"], s["unit"]
        cpu = _fmt(s["cpu"]["median"], unit) if "cpu" in s else "-"
        rows.append(
            f"| {s['label']} | {_fmt(wall['median'], unit)} | {_fmt(wall['min'], unit)} - {_fmt(wall['max'], unit)}"
            f" | {cpu} | {wall['n']} |"
        )
    return rows


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# trtforge benchmark results",
        "",
        f"{results['started']} - {'QUICK MODE (tiny sizes, not figures)' if results['quick'] else 'full run'}"
        f" - {results['seconds']:.0f} s in total",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['os']};"
        f" Python {machine['python']}; TensorRT-RTX {machine['tensorrt_rtx']}; polygraphy {machine['polygraphy']};"
        f" trtforge {machine['trtforge_commit']}. Load average at start/end:"
        f" {machine['load_average_at_start'][0]:.2f} / {machine['load_average_at_end'][0]:.2f}.",
        "",
        "Medians of interleaved runs (A B A B ...); wall time, and the child processes' CPU time"
        " (user + system), which is steadier on a busy machine.",
    ]
    for index, (key, fig) in enumerate(results["figures"].items(), start=1):
        lines += ["", f"## {fig.get('number', index)}. {fig['title']}", ""]
        if "error" in fig:
            lines.append(f"**failed**: {fig['error']}")
            continue
        lines += _series_rows(fig["series"])
        if fig["ratios"]:
            lines += ["", "| ratio | value |", "|---|---:|"]
            lines += [f"| {label} | {value:.3f} |" for label, value in fig["ratios"].items()]
        if fig["goals"]:
            lines += ["", "| goal | target | measured | met |", "|---|---|---:|:---:|"]
            for goal in fig["goals"]:
                lines.append(
                    f"| {goal['label']} | {goal['target']} | {goal['value']:.3f} | {'yes' if goal['met'] else 'NO'} |"
                )
        if fig["facts"]:
            lines += [""] + [f"- {label}: {value}" for label, value in fig["facts"].items()]
        lines += [f"- note: {note}" for note in fig["notes"]]
        lines.append(f"- figure took {fig['seconds']:.0f} s (`{key}`)")
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path
