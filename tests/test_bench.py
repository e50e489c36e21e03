"""The benchmark runner keeps working: a quick offline run writes its table. No time is asserted."""

from __future__ import annotations

import subprocess
import sys

from builders import ROOT

from bench.generate import Shape, generate


def test_the_generator_is_seeded_and_shaped():
    one, two = generate(Shape(clients=30, seed=3)), generate(Shape(clients=30, seed=3))
    assert one.collections.keys() == two.collections.keys()
    assert {k: sorted(v) for k, v in one.collections.items()} == \
        {k: sorted(v) for k, v in two.collections.items()}
    members = one.collections["check_in_assignments"].values()
    bases = [d for d in members if d.fields.get("recurringWeek") == 1]
    assert 25 <= len(bases) <= 30


def test_a_quick_offline_benchmark_writes_its_table(tmp_path):
    out = tmp_path / "benchmarks.md"
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--no-live", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    table = out.read_text()
    assert table.startswith("# Benchmarks\n\nMeasured by `python -m bench --quick --no-live` on ")
    assert table.count("| offline plan, ") == 12 and table.count("| pure kernel alone (one core), ") == 3
    assert table.count(": memory per document | ") == 3
    assert table.count("| Beam DirectRunner plan, ") == 2
