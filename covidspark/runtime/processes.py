"""Process lifetime: child processes that do not outlive the process that started them."""
import os
import signal
import sys

#: ``prctl`` option (linux/prctl.h): the signal sent to this process when its parent dies.
PR_SET_PDEATHSIG = 1


def exit_with_parent(sig=signal.SIGKILL):
    """Have the kernel send ``sig`` to this process when its parent dies (Linux only).

    torchrun starts each training rank in a session of its own, so a driver
    killed with its process group (a cancelled job, a lost driver) would leave
    the ranks training on, holding cores or GPUs. Called first thing in a rank,
    the rank dies with torchrun's agent, and the agent with the driver.
    Elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig)) != 0:
        return  # not allowed here (a sandbox): the rank lives as before
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
