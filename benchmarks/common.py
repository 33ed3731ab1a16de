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
    Python process), ``jvm_jit`` (the JVM's C1 and C2 compiler threads),
    ``jvm_other`` (the rest of the JVM: Spark's scheduler, executor task
    threads, the collector), ``python_workers`` (Python processes under the JVM:
    pyspark's daemon and workers, also those that have exited) and ``other``.
    Take two readings and subtract: only differences mean anything.
    """
    if not os.path.isdir("/proc/self/task"):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                raw = f.read()
        except OSError:  # it exited while we looked
            continue
        name, fields = raw[raw.index("(") + 1:raw.rindex(")")], raw.rsplit(")", 1)[1].split()
        procs[int(pid)] = (int(fields[1]), name, [int(v) / tick for v in fields[11:15]])
    roles = dict.fromkeys(("driver", "jvm_jit", "jvm_other", "python_workers", "other"), 0.0)
    me = os.getpid()
    for pid, (parent, name, (user, system, child_user, child_system)) in procs.items():
        above = []  # the names of the processes between this one and the driver
        while parent in procs and parent != me and pid != me:
            above.append(procs[parent][1])
            parent = procs[parent][0]
        if pid != me and parent != me:
            continue  # not under this process
        own, reaped = user + system, child_user + child_system
        if pid == me:
            roles["driver"] += own
            roles["other"] += reaped
        elif name == "java":
            jit = _thread_seconds(pid, JIT_THREADS, tick)
            roles["jvm_jit"] += jit
            roles["jvm_other"] += own - jit
            roles["python_workers"] += reaped  # a Python daemon that exited
        elif "java" in above:
            roles["python_workers"] += own + reaped
        else:
            roles["other"] += own + reaped
    return roles


def _thread_seconds(pid, names, tick):
    """CPU seconds of ``pid``'s live threads whose names start with one of ``names``."""
    seconds = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        if raw[raw.index("(") + 1:raw.rindex(")")].startswith(names):
            fields = raw.rsplit(")", 1)[1].split()
            seconds += (int(fields[11]) + int(fields[12])) / tick
    return seconds
