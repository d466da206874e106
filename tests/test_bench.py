"""The benchmark's command line and its renderer (JSON to markdown table and PNG plot), on the CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from fastkda.bench.__main__ import gpu_stem, main, parse_args, select_cases
from fastkda.bench.cases import DEFAULT, KDA_MD, QUICK
from fastkda.bench.render import markdown_table, render

RESULT = {
    "environment": {"gpu": "NVIDIA H100 80GB HBM3", "date": "2026-11-25T00:00:00+00:00", "torch": "2.11", "triton": "3.6",
                    "fla": "0.6.0"},
    "copy_bandwidth_gbs": 3000.0, "warmup": 3, "reps": 20,
    "cases": [
        {"case": "T8192-H96", "tokens": 8192, "H": 96, "HV": 96, "floor_ms": 0.34, "bandwidth_fraction": 0.2,
         "results": {"fastkda": {"ms": 1.7}, "fla": {"ms": 3.4, "speedup_of_fastkda": 2.0, "rel_diff_vs_fastkda": 4e-3},
                     "flash_kda": {"ms": 1.5, "speedup_of_fastkda": 0.88, "rel_diff_vs_fastkda": 2e-2}}},
        {"case": "T8192-H16-GVA32", "tokens": 8192, "H": 16, "HV": 32, "floor_ms": 0.1, "bandwidth_fraction": 0.1,
         "results": {"fastkda": {"ms": 1.0}, "fla": {"ms": 1.5, "speedup_of_fastkda": 1.5, "rel_diff_vs_fastkda": 5e-3}}},
    ],
}


def test_markdown_table_lists_every_case_and_baseline():
    md = markdown_table(RESULT)
    assert "| T8192-H96 | 8192 | 96 | 1.700 | 3.400 | 2.00x | 1.500 | 0.88x | 0.340 | 20% | 2.0e-02 (!) |" in md
    assert "| T8192-H16-GVA32 | 8192 | 16/32 | 1.000 | 1.500 | 1.50x | - | - | 0.100 | 10% | 5.0e-03 |" in md
    assert "NVIDIA H100 80GB HBM3" in md and "L2 flushed before each" in md
    timed = json.loads(json.dumps(RESULT))
    timed["cases"][0]["results"]["fastkda"]["host_ms"] = 0.3
    assert "host's launch time kept out" in markdown_table(timed)


def test_disturbed_times_are_marked():
    result = json.loads(json.dumps(RESULT))
    result["cases"][0]["results"]["fla"].update(ms_min=3.3, ms_max=6.0)
    result["cases"][1]["results"]["fla"].update(ms_min=1.45, ms_max=1.6)
    md = markdown_table(result)
    assert "| 3.400 * | 2.00x |" in md and "| 1.500 | 1.50x |" in md and "disturbed" in md
    assert "disturbed" not in markdown_table(RESULT)


def test_render_writes_table_and_png(tmp_path):
    path = tmp_path / "results_NVIDIA_H100.json"
    path.write_text(json.dumps(RESULT))
    md, png = render(path)
    assert md.read_text().startswith("NVIDIA H100")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(RESULT))
    assert main(["--render", str(path), "--no-plot"]) == 0
    assert "T8192-H96" in capsys.readouterr().out
    assert (tmp_path / "r.md").exists() and not (tmp_path / "r.png").exists()


def test_case_selection_and_names():
    assert select_cases(parse_args([])) == DEFAULT
    assert select_cases(parse_args(["--quick"])) == QUICK
    assert [c.name for c in select_cases(parse_args(["--cases", "T8192-H32,T65536-H4"]))] == ["T8192-H32", "T65536-H4"]
    with pytest.raises(SystemExit, match="unknown case names"):
        select_cases(parse_args(["--cases", "nope"]))
    assert all(c in DEFAULT for c in KDA_MD) and [c.name for c in QUICK] == ["T8192-H96", "T8192-H32", "T65536-H4"]
    assert gpu_stem("NVIDIA H100 80GB HBM3") == "results_NVIDIA_H100_80GB_HBM3"
    args = parse_args(["--reps", "5", "--warmup", "1", "--out-dir", "x", "--name", "y", "--no-baselines"])
    assert (args.reps, args.warmup, args.out_dir, args.name, args.no_baselines) == (5, 1, "x", "y", True)


def test_list(capsys):
    assert main(["--list"]) == 0
    assert capsys.readouterr().out.split() == [c.name for c in DEFAULT]


def test_cpu_run_is_verified(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("the CPU path runs only without a GPU")
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "RMS-relative error vs the float64 reference" in out and "ok" in out and "timings need a CUDA GPU" in out


def test_parallel_compile_plan():
    from fastkda.bench.warmup import plan_shares, share_of, worker_commands
    assert plan_shares(4, 16) == 4 and plan_shares(16, 16) == 1 and plan_shares(16, 2) == 1 and plan_shares(2, 128) == 4
    configs = list(range(10))
    assert sorted(sum((share_of(configs, i, 4) for i in range(4)), [])) == configs  # each compiled once
    assert share_of([0, 1], 3, 4) == [0]
    cmds = worker_commands(["T8192-H32", "T65536-H4"], ("fla",), cpus=16)
    assert len(cmds) == 8 and cmds[0][-4:] == ["T8192-H32", "0", "4", "fla"] and cmds[-1][-4:-2] == ["T65536-H4", "3"]
    assert worker_commands(["T8192-H32"], (), cpus=1)[0][-1] == "-"


def test_compile_only_autotuning_runs_its_share_untimed(monkeypatch):
    """A worker's autotuners run each configuration of their share once and time none."""
    import torch
    import triton
    import triton.language as tl
    from triton.runtime.autotuner import Autotuner

    from fastkda.bench.warmup import compile_only_autotuning
    monkeypatch.setattr(Autotuner, "prune_configs", Autotuner.prune_configs)   # restored after the test
    monkeypatch.setattr(Autotuner, "do_bench", Autotuner.__dict__["do_bench"])
    monkeypatch.setattr(triton.testing, "do_bench", lambda *a, **k: pytest.fail("timed a configuration"))

    @triton.autotune([triton.Config({"B": b}) for b in (1, 2, 4, 8, 16)], key=["n"])
    @triton.jit
    def count(x, n, B: tl.constexpr):
        tl.atomic_add(x + B, 1)

    compile_only_autotuning(share=1, shares=2)
    x = torch.zeros(17, dtype=torch.int32, device="cuda" if torch.cuda.is_available() else "cpu")
    count[(1,)](x, 3)
    runs = {b: int(x[b]) for b in (1, 2, 4, 8, 16) if x[b]}
    assert set(runs) == {2, 8} and runs[count.best_config.kwargs["B"]] == 2  # the share, then the chosen one again


def test_render_without_baselines_writes_no_plot(tmp_path):
    result = json.loads(json.dumps(RESULT))
    for row in result["cases"]:
        row["results"] = {"fastkda": row["results"]["fastkda"]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    md, png = render(path)
    assert png is None and not (tmp_path / "r.png").exists() and "| T8192-H96 | 8192 | 96 | 1.700 |" in md.read_text()


ROOT = Path(__file__).resolve().parents[1]


def _ab_time():
    path = ROOT / "tools" / "ab_time.py"
    spec = importlib.util.spec_from_file_location("ab_time", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ab_time_arguments(tmp_path, capsys):
    """tools/ab_time.py takes NAME=DIR variants that hold a fastkda package, at least two with distinct names."""
    ab = _ab_time()
    root = str(ROOT)
    a = ab.parse_args(["out.json", "T8192-H96", "--variant", f"base={root}", "--variant", f"new={root}"])
    assert [n for n, _ in a.variant] == ["base", "new"] and a.rounds == 2 and a.medians == 2
    for bad, why in ((["--variant", f"base={root}"], "at least two"),
                     (["--variant", f"a={root}", "--variant", f"a={root}"], "distinct"),
                     (["--variant", f"a={root}", "--variant", root], "NAME=DIR"),
                     (["--variant", f"a={root}", "--variant", f"b={tmp_path}"], "holds no fastkda package")):
        with pytest.raises(SystemExit):
            ab.parse_args(["out.json", "T8192-H96", *bad])
        assert why in capsys.readouterr().err


def test_ab_time_summary():
    """The change is the variant's median of medians against the first variant's."""
    table = _ab_time().summarize({"c": {"base": [1.0, 1.2, 1.1], "new": [0.99, 0.97, 0.98]}}, ["base", "new"])
    assert table["c"]["base"]["change"] == 0 and table["c"]["new"]["median"] == 0.98
    assert abs(table["c"]["new"]["change"] - (0.98 / 1.1 - 1)) < 1e-12
    assert (table["c"]["new"]["min"], table["c"]["new"]["max"]) == (0.97, 0.99)
