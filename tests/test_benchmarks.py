"""The benchmarks' own accounting (`benchmarks/common.py`): CPU by role, the workers' memory."""
import os
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"),
                                reason="reads Linux's /proc")


def test_python_workers_cpu_is_what_the_workers_themselves_measured(spark):
    from common import cpu_seconds_by_role

    def burn(seconds):
        """Busy-loop for ``seconds`` of this process's CPU; return what it measured."""
        import time

        start = time.process_time()
        while time.process_time() - start < seconds:
            pass
        return time.process_time() - start

    before = cpu_seconds_by_role()
    # Two tasks, each burning 0.6 s in a Python worker under this session's JVM.
    reported = (spark.sparkContext.parallelize([0.6, 0.6], 2)
                .map(burn).collect())
    after = cpu_seconds_by_role()
    used = {role: after[role] - before[role] for role in before}
    # The workers' own clocks are the reference: every second they report is
    # counted as theirs (plus start-up and pickling), none as the driver's.
    assert used["python_workers"] >= 0.9 * sum(reported), (used, reported)
    assert used["python_workers"] < sum(reported) + 5.0, (used, reported)
    assert used["driver"] < 0.5 * sum(reported), used
    # A compiler thread the JVM stops moves its seconds from jvm_jit to jvm_other
    # (seen once in CI: jvm_jit -0.43), so only the JVM's total must not fall.
    assert all(used[role] >= 0 for role in ("driver", "python_workers", "other")), used
    assert used["jvm_jit"] + used["jvm_other"] >= 0, used
    # The JVM's compiler threads are found by name: a JVM that has run Spark jobs
    # has compiled something, so a reading of zero means the names did not match.
    assert after["jvm_jit"] > 0, after
    assert after["jvm_other"] > after["jvm_jit"] * 0.1, after


def test_the_python_workers_are_found_and_their_memory_read(spark):
    import resource

    from common import python_worker_pids, status_kb

    # The workers' own pids are the reference: each task reports the process it ran in.
    ran_in = set(spark.sparkContext.parallelize(range(4), 2)
                 .map(lambda _: __import__("os").getpid()).collect())
    found = python_worker_pids()
    assert ran_in and ran_in <= set(found), (ran_in, found)
    assert os.getpid() not in found  # the driver is not a worker
    # The peak RSS the kernel reports to getrusage (kB on Linux) is the process's VmHWM.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert abs(status_kb(os.getpid(), "VmHWM") - peak) <= 0.05 * peak
    assert status_kb(2 ** 22 + 7, "VmRSS") == 0  # no such process: nothing, not an error
