"""The daemon caps glibc's malloc arenas before its threads start (memory grows with cameras
otherwise: benchmarks/memory.py); an operator's MALLOC_ARENA_MAX wins."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

CODE = "from appliance.service.malloc_arenas import limit_malloc_arenas; print(limit_malloc_arenas())"


def _run(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_arena_cap_is_applied_on_glibc_unless_the_operator_set_one():
    import os

    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _run(base) == "True"  # glibc's mallopt accepted M_ARENA_MAX
    assert _run({**base, "MALLOC_ARENA_MAX": "4"}) == "False"  # glibc applied the operator's value itself
