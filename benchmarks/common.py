"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""
import json
import os


def emit_json(result, path=None, indent=None):
    """Print ``result`` as one JSON document and, when ``path`` is given, write it there too."""
    text = json.dumps(result, indent=indent)
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")


def benchmark_device():
    """GPU 0 where PyTorch sees one, else the CPU, as a ``TaskDevice``.

    Not :func:`covidspark.models.devices.default_device`: that asks Spark first,
    and the GPU benchmarks run where there is no Spark.
    """
    import torch

    from covidspark.models.devices import CPU, TaskDevice

    return TaskDevice("cuda", "0", 0) if torch.cuda.is_available() else CPU


#: The JVM's JIT compiler threads, as Linux names them (15 characters at most).
JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")


def cpu_seconds_by_role():
    """CPU seconds used so far by this process and the processes under it, by role.

    Read from Linux's ``/proc``; ``None`` elsewhere. Roles: ``driver`` (this
    Python process), ``jvm_jit`` (the JVM's live C1 and C2 compiler threads),
    ``jvm_other`` (the rest of the JVM: Spark's scheduler, executor task
    threads, the collector; and the seconds of compiler threads the JVM has
    stopped, so between two readings ``jvm_jit`` can even fall: the JVM's sum is
    exact, its split an approximation; CI saw -0.43 s once, on 2 cores),
    ``python_workers`` (Python processes under the JVM: pyspark's daemon and
    workers, also those that have exited) and ``other``. Take two readings and
    subtract: only differences mean anything.
    """
    if not os.path.isdir("/proc/self/task"):
        return None
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        stat = _read_stat(f"/proc/{pid}/stat")
        if stat is not None:  # None: it exited while we looked
            procs[int(pid)] = stat
    roles = dict.fromkeys(("driver", "jvm_jit", "jvm_other", "python_workers", "other"), 0.0)
    me = os.getpid()
    for pid, (name, parent, own, reaped) in procs.items():
        if pid == me:
            roles["driver"] += own
            roles["other"] += reaped
            continue
        above = []  # the names of the processes between this one and the driver
        while parent in procs and parent != me:
            above.append(procs[parent][0])
            parent = procs[parent][1]
        if parent != me:
            continue  # not under this process
        if name == "java":
            jit = sum(stat[2] for stat in map(_read_stat, _thread_stats(pid))
                      if stat is not None and stat[0].startswith(JIT_THREADS))
            roles["jvm_jit"] += jit
            roles["jvm_other"] += own - jit
            roles["python_workers"] += reaped  # a Python daemon that exited
        elif "java" in above:
            roles["python_workers"] += own + reaped
        else:
            roles["other"] += own + reaped
    return roles


def _thread_stats(pid):
    return [f"/proc/{pid}/task/{tid}/stat" for tid in os.listdir(f"/proc/{pid}/task")]


def _read_stat(path):
    """``(name, parent pid, own CPU seconds, reaped children's CPU seconds)`` of a
    ``/proc`` stat file, or None when the process or thread has gone."""
    try:
        with open(path) as f:
            raw = f.read()
    except OSError:
        return None
    # The name is in parentheses and may hold spaces and parentheses itself.
    name, fields = raw[raw.index("(") + 1:raw.rindex(")")], raw.rsplit(")", 1)[1].split()
    user, system, child_user, child_system = (int(v) / os.sysconf("SC_CLK_TCK")
                                              for v in fields[11:15])
    return name, int(fields[1]), user + system, child_user + child_system


def python_worker_pids():
    """PIDs of pyspark's Python daemons and workers on this machine (Linux ``/proc``)."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:  # it exited while we looked
            continue
        if b"pyspark.daemon" in cmdline or b"pyspark.worker" in cmdline:
            pids.append(int(entry))
    return pids


def status_kb(pid, field):
    """A ``/proc/PID/status`` field in kB (``VmRSS``, ``VmHWM``); 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
