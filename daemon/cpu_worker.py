"""A CPU worker process: runs the governor's tasks one at a time, each under a memory limit.

bfd starts `cpu_workers` of these (`python -m bulkforge.daemon.cpu_worker FD BFD_PID`, see
cpu_pool.py) and hands each one task at a time over a socketpair: a function (or
"module:function") with its arguments, pickled, and the memory the task may take. The
worker answers with the function's value or its exception. Standard library only: what a
task needs (pyarrow, numpy) is imported by the task, in the worker, never by bfd.

The memory limit is RLIMIT_DATA, the private writable memory of the process (heap,
anonymous mappings, thread stacks): what a task's buffers grow. Not RLIMIT_AS, which also
counts code, mapped libraries and the address space allocators reserve without using
(330 MiB once pyarrow is imported on a 2-core machine, and more with more cores). A task may
grow the worker by `limit` bytes beyond its baseline: what the interpreter and the tasks'
libraries took when they were imported. A task that goes over gets MemoryError from its
allocator, which is answered as such; the worker then ends, so the next task starts in a
fresh one.

It ends with bfd whatever the moment: PR_SET_PDEATHSIG has the kernel kill it when the
thread that started it ends, and a worker whose bfd died before that took effect (its
parent is no longer the pid bfd passed) exits at once. It ends by itself at the end of its
socket. Nothing of multiprocessing is used, so no resource tracker is started either.
"""

import contextlib
import importlib
import os
import pickle
import resource
import socket
import struct
import sys
import traceback
from dataclasses import dataclass

from bulkforge.daemon.lifeline import die_with
from bulkforge.proto.units import size_text

_LENGTH = struct.Struct("!Q")


@dataclass(frozen=True)
class Order:
    # pickle of (function or "module:function", args, kwargs): unpickled in the worker,
    # whose baseline then includes the modules that imported.
    call: bytes
    # Bytes the task may add to the worker's baseline (0: no limit).
    limit: int


@dataclass(frozen=True)
class Answer:
    ok: bool
    # The pickled value, or the pickled exception (b"" when it cannot be pickled).
    payload: bytes
    # The exception's class name and its text, and the worker's traceback.
    error_type: str = ""
    error: str = ""
    traceback: str = ""
    # The worker ends after this answer (a task ran out of memory in it).
    retire: bool = False


def send(sock: socket.socket, message: object) -> None:
    body = pickle.dumps(message)
    sock.sendall(_LENGTH.pack(len(body)) + body)


def receive_bytes(sock: socket.socket) -> bytes | None:
    """One frame's body, or None at the end of the socket (the other end is gone)."""
    header = _read_exactly(sock, _LENGTH.size)
    if header is None:
        return None
    (length,) = _LENGTH.unpack(header)
    return _read_exactly(sock, length)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        try:
            chunk = sock.recv(min(left, 1 << 20))
        except ConnectionError:
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def private_bytes() -> int:
    """The process's private writable memory (VmData): what RLIMIT_DATA counts."""
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def resolve(function):
    """A function, given as itself or as "module:function" (imported here)."""
    if isinstance(function, str):
        module, name = function.split(":")
        return getattr(importlib.import_module(module), name)
    return function


class Worker:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        # The interpreter and every module a task imported: what no task is charged for.
        self.baseline = private_bytes()

    def serve(self) -> None:
        while (body := receive_bytes(self.sock)) is not None:
            answer = self.run(pickle.loads(body))
            send(self.sock, answer)
            if answer.retire:
                return

    def run(self, order: Order) -> Answer:
        before = private_bytes()
        try:
            function, args, kwargs = pickle.loads(order.call)
            function = resolve(function)
        except BaseException as exc:  # every failure is answered
            return failed(exc)
        self.baseline += max(0, private_bytes() - before)
        limit = self.baseline + order.limit if order.limit else 0
        try:
            with memory_limit(limit):
                value = function(*args, **kwargs)
        except MemoryError as exc:
            return failed(self.out_of_memory(exc, order.limit), retire=True)
        except BaseException as exc:
            return failed(exc)
        try:
            return Answer(True, pickle.dumps(value))
        except Exception as exc:  # an unpicklable value fails the task
            return failed(exc)

    def out_of_memory(self, exc: MemoryError, limit: int) -> MemoryError:
        """A plain MemoryError (bfd imports no numpy or pyarrow to read it) that says why."""
        why = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if not limit:
            return MemoryError(why)
        return MemoryError(
            f"the task went over its memory limit of {size_text(limit)} (beyond the worker's "
            f"{size_text(self.baseline)}): {why}"
        )


@contextlib.contextmanager
def memory_limit(limit: int):
    """RLIMIT_DATA at limit (0: none) while the task runs; lifted for the answer."""
    if not limit:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:  # RLIM_INFINITY is -1: no min() with it
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def failed(exc: BaseException, retire: bool = False) -> Answer:
    text = "".join(traceback.format_exception(exc))
    try:
        payload = pickle.dumps(exc)
    except Exception:  # bfd rebuilds it from its name and text
        payload = b""
    return Answer(False, payload, type(exc).__name__, str(exc), text, retire)


def main(argv: list[str]) -> None:
    fd, parent = (int(value) for value in argv[:2])
    die_with(parent)
    # A worker that crashes (often: out of memory) leaves no core of gigabytes behind.
    with contextlib.suppress(OSError):  # a sandbox that forbids it keeps its own core policy
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    # Arrow through malloc, whose freed pages go back (governor.use_lean_memory).
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    Worker(socket.socket(fileno=fd)).serve()


if __name__ == "__main__":
    # Run as the module itself, not as __main__: bfd unpickles its Answer by that name.
    from bulkforge.daemon.cpu_worker import main as run_as_module

    run_as_module(sys.argv[1:])
