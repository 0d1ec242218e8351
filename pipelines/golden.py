"""The compiled pipelines, committed: a fresh compile is diffed against them (tests/pipelines/test_golden.py),
so a change to the DAG, a parameter, a default or a task's environment is a reviewable diff.

    python -m pipelines.golden        # rewrite pipelines/compiled/ after an intended change (make golden)
"""

from __future__ import annotations

import sys
from pathlib import Path

GOLDEN_DIR = Path(__file__).resolve().parent / "compiled"
NAMES = ("servicetime.yaml", "servicetime-cluster.yaml", "servicetime-plan.yaml", "servicetime-monitor.yaml")
UNVERSIONED = ("sdkVersion:",)  # lines that name the SDK that compiled, not what was compiled


def compile_all(dest: Path) -> list[Path]:
    """The packages a user meets: the local pipeline, and the cluster's three (as `submit --upload` builds them)."""
    from components.core.config import load_config
    from pipelines.submit import cluster_config, compile_cluster_pipeline, compile_pipeline

    dest.mkdir(parents=True, exist_ok=True)
    ccfg = cluster_config(load_config())
    compile_pipeline(dest / NAMES[0])
    compile_cluster_pipeline(dest / NAMES[1], ccfg)
    compile_cluster_pipeline(dest / NAMES[2], ccfg, kind="plan")
    compile_cluster_pipeline(dest / NAMES[3], ccfg, kind="monitor")
    return [dest / n for n in NAMES]


def comparable(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.lstrip().startswith(UNVERSIONED)]


def main(argv: list[str] | None = None) -> int:
    for path in compile_all(Path(argv[0]) if argv else GOLDEN_DIR):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
