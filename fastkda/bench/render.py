"""Turns a benchmark JSON into a markdown table and a PNG plot (speedup of fastkda per case, one bar per
baseline). Reads only the JSON."""

from __future__ import annotations

import json
from pathlib import Path

BASELINE_LABELS = {"fla": "fla chunk_kda", "flash_kda": "FlashKDA"}


SPREAD_LIMIT = 1.1  # a time whose slowest repetition exceeds the median by more than this is marked


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _time(entry: dict) -> str:
    """The median, marked * when the repetitions spread widely (the run was disturbed)."""
    return _fmt(entry["ms"]) + (" *" if entry.get("ms_max", 0.0) > SPREAD_LIMIT * entry["ms"] else "")


def baselines_of(result: dict) -> list[str]:
    names = []
    for row in result["cases"]:
        for name in row["results"]:
            if name in BASELINE_LABELS and name not in names:
                names.append(name)
    return names


def _method(result: dict) -> str:
    # runs that record the host's time per call kept it out of the timings (fastkda.bench.harness.time_ms)
    host_kept_out = any("host_ms" in e for row in result["cases"] for e in row["results"].values())
    return "L2 flushed and the host's launch time kept out before each" if host_kept_out else "L2 flushed before each"


def markdown_table(result: dict) -> str:
    env = result["environment"]
    bases = baselines_of(result)
    head = ["case", "tokens", "heads", "fastkda ms"]
    for b in bases:
        head += [f"{BASELINE_LABELS[b]} ms", f"speedup vs {BASELINE_LABELS[b]}"]
    head += ["floor ms", "of copy BW", "max rel diff"]
    lines = [f"{env.get('gpu', 'unknown GPU')}, {env.get('date', '')}, torch {env.get('torch')}, "
             f"triton {env.get('triton')}, fla {env.get('fla')}; copy bandwidth {result['copy_bandwidth_gbs']:.0f} GB/s; "
             f"median of {result['reps']} CUDA-event timings, {_method(result)}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["cases"]:
        res = row["results"]
        heads = f"{row['H']}" if row["HV"] == row["H"] else f"{row['H']}/{row['HV']}"
        cells = [row["case"], str(row["tokens"]), heads, _time(res["fastkda"])]
        diffs = []
        for b in bases:
            e = res.get(b)
            cells += [_time(e) if e else "-", f"{e['speedup_of_fastkda']:.2f}x" if e else "-"]
            if e:
                diffs.append(e["rel_diff_vs_fastkda"])
        cells += [_fmt(row["floor_ms"]), f"{100 * row['bandwidth_fraction']:.0f}%",
                  f"{max(diffs):.1e}" + (" (!)" if max(diffs) > 1e-2 else "") if diffs else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    if any(" *" in line for line in lines[4:]):
        lines += ["", f"\\* the slowest repetition took over {SPREAD_LIMIT:g}x the median: disturbed, worth a rerun "
                  "(minimum and maximum are in the JSON)."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bases = baselines_of(result)
    names = [row["case"] for row in result["cases"]]
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(names)), 4.5))
    width = 0.8 / max(len(bases), 1)
    for i, b in enumerate(bases):
        vals = [row["results"].get(b, {}).get("speedup_of_fastkda", 0.0) for row in result["cases"]]
        ax.bar([x + i * width for x in range(len(names))], vals, width, label=f"vs {BASELINE_LABELS[b]}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([x + width * (len(bases) - 1) / 2 for x in range(len(names))])
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("speedup of fastkda (x)")
    ax.set_title(f"fastkda forward, {result['environment'].get('gpu', '')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(json_path: Path, plot_png: bool = True) -> tuple[Path, Path | None]:
    """Writes <stem>.md (and <stem>.png, when a baseline ran) beside the JSON; returns their paths."""
    result = json.loads(Path(json_path).read_text())
    md = Path(json_path).with_suffix(".md")
    md.write_text(markdown_table(result))
    png = None
    if plot_png and baselines_of(result):  # the plot is of speedups: nothing to draw without a baseline
        try:
            png = Path(json_path).with_suffix(".png")
            plot(result, png)
        except ImportError:
            png = None
            print("matplotlib is not installed: no plot (python -m fastkda.bench --render JSON makes it later)")
    return md, png
