"""The benchmarks' CPU accounting by process tree (``benchmarks/scaling.py``): what
``overhead.py`` and ``overhead_protocol.py`` charge to each role. A signature change there once
broke both without any test noticing."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks.scaling import role_cpu, session_cpu


def test_session_cpu_walks_this_process_tree_with_the_driver_apart() -> None:
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    child = subprocess.Popen([sys.executable, "-c", spin + "time.sleep(30)"])
    try:
        before = session_cpu()
        assert before[os.getpid()][0] == "driver"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the child has burnt its 0.3 s
            after = session_cpu()
            if child.pid in after and after[child.pid][1] >= 0.3:
                break
            time.sleep(0.1)
        assert child.pid in after and after[child.pid][0] == "ray_other"  # not a Ray title
        used = role_cpu(before, after)
        assert used["ray_other"] > 0.1  # (a Ray cluster other tests started here may add roles)
        assert "node" not in used and "client" not in used  # this process counts as the driver
    finally:
        child.kill()
        child.wait()
