"""A worker process's tie to bfd (standard library only): it ends when bfd ends, however.

Every worker bfd starts (the transfer workers, the CPU workers) calls `die_with` first.
"""

import ctypes
import ctypes.util
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> None:
    """End when bfd ends, even by kill -9; leave SIGINT and SIGTERM to bfd, which ends us.

    The kernel sends SIGKILL when the thread that started us ends (bfd starts each
    worker from a thread that lives as long as bfd), and a parent already gone before
    that took effect is seen by its pid, passed in by bfd rather than read after the fact.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)  # bfd died before the line above took effect
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
