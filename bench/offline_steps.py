"""The offline benchmark's steps that hold a large state, each run in a process of its own.

A process's peak memory, as the operating system reports it, counts the process it was forked
from: a benchmark that held a million documents in memory when it started ``reconcile plan``
would see that memory in the command's figure. So the benchmark's own process never holds them.

    python -m bench.offline_steps generate FILE CLIENTS PRESENT RESPONSES_PER_SERIES
        writes the snapshot file; prints its collections' sizes (JSON)
    python -m bench.offline_steps kernel FILE
        reads the file and prints the seconds ``kernel.reconcile`` takes on one core
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generate import Shape, generate  # noqa: E402
from reconciler.kernel import reconcile  # noqa: E402
from reconciler.snapshot import read_snapshot, snapshot_bytes  # noqa: E402
from reconciler.spec import load_spec  # noqa: E402


def main(args: list[str]) -> None:
    step, path = args[0], Path(args[1])
    if step == "generate":
        state = generate(Shape(clients=int(args[2]), present=float(args[3]),
                               responses_per_series=float(args[4])))
        path.write_bytes(snapshot_bytes(state))
        print(json.dumps({name: len(docs) for name, docs in state.collections.items()}))
    elif step == "kernel":
        spec = load_spec(ROOT / "specs" / "checkins.yaml")
        state = read_snapshot(path, spec.collections)
        gc.disable()
        started = time.perf_counter()
        reconcile(spec, state)  # one core: the figure is per core
        print(time.perf_counter() - started)
    else:
        raise SystemExit(f"unknown step {step!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
