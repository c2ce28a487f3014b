"""Run a command under a seccomp filter, as systemd's SystemCallFilter= would put it there.

    python3 tests/seccomp_exec.py ALLOWED_FILE ERRNO -- COMMAND ARGS...

ALLOWED_FILE lists the system calls allowed, one a line; every other call fails with ERRNO
(the unit's SystemCallErrorNumber=), as systemd's allow-list filter makes it. The filter is
installed through libseccomp (ctypes: the library systemd itself uses, installed with it),
then the command is exec'ed; its children (bfd's workers) inherit the filter.
Standard library only: it runs before anything else in the process.
"""

import ctypes
import ctypes.util
import errno
import os
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000
NR_SCMP_ERROR = -1


def install_filter(allowed: list[str], deny_errno: int) -> None:
    seccomp = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
    seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    seccomp.seccomp_rule_add.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
    ]
    seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
    context = seccomp.seccomp_init(SCMP_ACT_ERRNO | (deny_errno & 0xFFFF))
    if not context:
        raise SystemExit("seccomp_init failed")
    for name in allowed:
        number = seccomp.seccomp_syscall_resolve_name(name.encode())
        if number == NR_SCMP_ERROR:
            continue  # another architecture's call (systemd's groups list every arch's)
        if seccomp.seccomp_rule_add(context, SCMP_ACT_ALLOW, number, 0) < 0:
            # A pseudo-syscall of libseccomp that this architecture lacks (e.g. _llseek).
            continue
    # libseccomp sets no_new_privs itself before loading, as NoNewPrivileges=yes does.
    result = seccomp.seccomp_load(context)
    if result < 0:
        raise SystemExit(f"seccomp_load failed: {os.strerror(-result)}")


def main() -> None:
    allowed_file, errno_name, separator, *command = sys.argv[1:]
    assert separator == "--" and command, __doc__
    with open(allowed_file) as listed:
        allowed = listed.read().split()
    install_filter(allowed, getattr(errno, errno_name))
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
