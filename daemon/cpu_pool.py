"""The governor's CPU worker processes: fed one task each, replaced when they die, stoppable.

`cpu_workers` slots, each a thread of bfd that owns one worker process (cpu_worker.py)
and carries one task at a time to it over a socketpair, blocking on the answer. A worker
starts with the first task its slot takes and stays for the next ones.

- **A dead worker is replaced.** A worker that dies under a task (kill -9, a crash, the
  kernel's OOM killer) is reaped and its task runs again on a fresh worker, at most RETRIES
  times; then the task fails with `WorkerDied` and its error class: `memory` when the
  worker crashed under its memory limit, else `worker_died`. The other slots never notice.
- **Each task is bounded.** A task may grow its worker by `task_memory()` bytes (RLIMIT_DATA,
  see cpu_worker.py); one that goes over fails with MemoryError, and its worker is replaced.
- **Work can be stopped.** A task carries its owner (a job id); `stop(owner)` drops the
  owner's queued tasks and kills the workers running its others at once, so a paused or
  cancelled job's CPU work ends within the moment; their futures end with `TaskStopped`
  only once the killed worker is reaped (it writes nothing after).
- **Workers end with bfd.** Each worker is started by its slot's thread, which lives as
  long as bfd: PR_SET_PDEATHSIG (set in the worker) has the kernel kill it when that thread
  ends, and bfd's pid is passed in, so a worker started as bfd died exits at once. No
  multiprocessing: no resource tracker or other helper process is left behind.

It is an `Executor`, so `Executor.map` spreads a function over the workers (`bfctl verify`).
"""

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from socket import socket, socketpair

from loguru import logger

from bulkforge.daemon.cpu_worker import Answer, Order, receive_bytes, send
from bulkforge.proto.units import size_text

# A task whose worker died under it runs again on a fresh worker at most this many times.
RETRIES = 2
# How long closing waits for the tasks in flight before ending their workers.
CLOSE_WAIT_S = 5.0
# How long an idle worker whose socket was closed may take to exit before it is killed.
EXIT_WAIT_S = 5.0
# A worker that dies of one of these while a memory limit holds it most likely ran out:
# allocators and C++ libraries abort, or touch a null pointer, when memory is refused.
CRASHES_OF_MEMORY = frozenset({signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS})


class WorkerDied(Exception):
    """The task's worker died under it RETRIES + 1 times: the task fails with error_class."""

    def __init__(self, error_class: str, message: str):
        super().__init__(message)
        self.error_class = error_class


class TaskStopped(Exception):
    """The task's worker was ended under it: its job was paused or cancelled, or bfd stops."""


class WorkerError(Exception):
    """A task's exception bfd does not rebuild (its class is not loaded in bfd, or it does not
    unpickle): its class name and its text."""

    def __init__(self, type_name: str, message: str):
        super().__init__(message)
        self.type_name = type_name


class RemoteTraceback(Exception):
    """The worker's traceback of an exception, chained to it as its cause for the log."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]) if self.args else ""


@dataclass(eq=False)
class _Task:
    call: bytes
    what: str  # "module:function", for the log
    owner: Hashable | None
    future: Future
    deaths: int = 0
    started: bool = False  # its future is running (it may be cancelled only before)
    stopped: str | None = None  # why its worker was killed under it


# What _take answers a slot whose idle worker is asked to end.
_END_IDLE = _Task(b"", "", None, Future())


@dataclass(eq=False)
class _Process:
    popen: subprocess.Popen
    sock: socket
    # Signals go through a pidfd: never to another process that reused a reaped pid.
    pidfd: int | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self) -> None:
        """SIGKILL (under the pool's lock, so the pidfd is still open)."""
        with contextlib.suppress(ProcessLookupError, OSError):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            else:
                self.popen.kill()

    def reap(self, wait_s: float) -> int:
        """Close its socket (an idle worker then exits), wait, kill if it lingers; its code."""
        self.sock.close()
        try:
            code = self.popen.wait(wait_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        return code


@dataclass(eq=False)
class _Slot:
    number: int
    process: _Process | None = None
    task: _Task | None = None
    # Its worker is idle and asked to end (the memory cap is reached).
    end_idle: bool = False
    # The memory limit of the task it carries (bytes beyond the baseline; 0: none).
    limit: int = 0
    thread: threading.Thread | None = field(default=None, repr=False)


class CpuPool(Executor):
    def __init__(self, size: Callable[[], int], task_memory: Callable[[], int]):
        # Read at each use: `bfctl system --set` changes both while tasks run.
        self._size = size
        self._task_memory = task_memory
        self._lock = threading.Condition()
        self._queue: deque[_Task] = deque()
        self._slots: dict[int, _Slot] = {}
        self._closing = False

    # -- what the governor asks ---------------------------------------------------------

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self.run(fn, args, kwargs)

    def run(self, function, args: tuple = (), kwargs: dict | None = None, owner=None) -> Future:
        """Run function(*args, **kwargs) in a worker; function may be "module:function"."""
        call = pickle.dumps((function, tuple(args), kwargs or {}))
        task = _Task(call, _name_of(function), owner, Future())
        with self._lock:
            if self._closing:
                raise RuntimeError("bfd is stopping: no new work for the CPU workers")
            self._queue.append(task)
            self._fill()
            self._lock.notify_all()
        return task.future

    def stop(self, owner: Hashable) -> int:
        """Drop owner's queued tasks and kill the workers running its others; how many."""
        with self._lock:
            queued = [task for task in self._queue if task.owner == owner]
            for task in queued:
                self._queue.remove(task)
            running = [s for s in self._slots.values() if s.task and s.task.owner == owner]
            for slot in running:
                slot.task.stopped = "its job was stopped"
                if slot.process is not None:
                    slot.process.kill()
        for task in queued:
            _settle_stopped(task, "its job was stopped")
        if running:
            logger.info(
                "stopped {} task(s) of job id {} in CPU workers (their workers are ended)",
                len(running),
                owner,
            )
        return len(queued) + len(running)

    def resized(self) -> None:
        """cpu_workers changed: start slots for queued work, or retire idle ones."""
        with self._lock:
            if self._queue:
                self._fill()
            self._lock.notify_all()

    def end_idle(self) -> int:
        """Ask idle workers to end, giving their memory back (a fresh one starts for the next
        task); how many. An idle worker holds the libraries its tasks imported."""
        with self._lock:
            idle = [s for s in self._slots.values() if s.task is None and s.process is not None]
            for slot in idle:
                slot.end_idle = True
            self._lock.notify_all()
        return len(idle)

    def pids(self) -> list[int]:
        with self._lock:
            return [s.process.pid for s in self._slots.values() if s.process is not None]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.close()

    def close(self, grace_s: float = CLOSE_WAIT_S) -> None:
        """No new work; queued work is dropped, running work gets grace_s, then is killed."""
        with self._lock:
            self._closing = True
            dropped = list(self._queue)
            self._queue.clear()
            threads = [slot.thread for slot in self._slots.values() if slot.thread]
            self._lock.notify_all()
        for task in dropped:
            _settle_stopped(task, "bfd is stopping")
        deadline = time.monotonic() + grace_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for slot in self._slots.values():
                if slot.task is not None:
                    slot.task.stopped = "bfd is stopping"
                if slot.process is not None:
                    slot.process.kill()
        for thread in threads:
            thread.join(EXIT_WAIT_S)

    # -- the slots ------------------------------------------------------------------------

    def _fill(self) -> None:
        """Under the lock: a thread for every slot up to cpu_workers."""
        for number in range(self._size()):
            if number not in self._slots:
                slot = _Slot(number)
                slot.thread = threading.Thread(
                    target=self._serve, args=(slot,), name=f"cpu-slot-{number}", daemon=True
                )
                self._slots[number] = slot
                slot.thread.start()

    def _serve(self, slot: _Slot) -> None:
        """A slot's thread: take tasks until retired or closing, then end its worker.

        The worker is started from this thread: its PR_SET_PDEATHSIG fires when this
        thread ends, which is when the slot ends, or bfd.
        """
        try:
            while (task := self._take(slot)) is not None:
                if task is _END_IDLE:
                    self._drop_process(slot, kill=False)
                    continue
                try:
                    self._carry(slot, task)
                except Exception as exc:  # a bug here must not leave the task unanswered
                    logger.opt(exception=exc).error("CPU slot: {} failed", task.what)
                    self._end_task(slot)
                    self._drop_process(slot, kill=True)
                    _settle(task, exc)
        finally:
            self._drop_process(slot, kill=False)

    def _take(self, slot: _Slot) -> "_Task | None":
        """The slot's next task (or _END_IDLE), waiting for one; None: the slot ends."""
        with self._lock:
            while True:
                if self._closing or slot.number >= self._size():
                    if self._slots.get(slot.number) is slot:
                        del self._slots[slot.number]
                    return None
                if slot.end_idle:
                    slot.end_idle = False
                    if slot.process is not None:
                        return _END_IDLE
                while self._queue:
                    task = self._queue.popleft()
                    if task.started or task.future.set_running_or_notify_cancel():
                        task.started = True
                        slot.task, slot.limit = task, self._task_memory()
                        return task
                self._lock.wait()

    def _carry(self, slot: _Slot, task: _Task) -> None:
        """One task through the slot's worker (started first if it has none, or it died idle)."""
        if slot.process is not None and slot.process.popen.poll() is not None:
            pid, code = self._drop_process(slot, kill=False)
            logger.warning("CPU worker (pid {}) died idle ({})", pid, _how_it_ended(code))
        if slot.process is None:
            process = _spawn()
            with self._lock:
                slot.process = process
        with self._lock:
            process, stopped = slot.process, task.stopped
        if stopped:  # stopped while its worker started: the worker is fine, the task is not
            self._end_task(slot)
            _settle_stopped(task, stopped)
            return
        try:
            send(process.sock, Order(task.call, slot.limit))
            body = receive_bytes(process.sock)
        except OSError:
            body = None
        if body is None:
            self._died(slot, task)
        else:
            self._answered(slot, task, pickle.loads(body))

    def _answered(self, slot: _Slot, task: _Task, answer: Answer) -> None:
        self._end_task(slot)
        # A worker that ran out of memory retires; one killed by a stop as it answered is gone.
        if answer.retire or task.stopped:
            self._drop_process(slot, kill=bool(task.stopped))
        if answer.ok:
            try:
                value = _load(answer.payload)
            except Exception as exc:  # a class bfd has not loaded, say
                _settle(task, WorkerError(type(exc).__name__, f"its answer is unreadable: {exc}"))
                return
            if not task.future.done():
                task.future.set_result(value)
            return
        _settle(task, _rebuilt(answer))

    def _died(self, slot: _Slot, task: _Task) -> None:
        """The worker died under the task: reap it, then run the task again or fail it."""
        pid, code = self._drop_process(slot, kill=True)  # it is dead: this only reaps it
        how = _how_it_ended(code)
        memory = bool(slot.limit) and -code in CRASHES_OF_MEMORY
        with self._lock:
            slot.task = None
            stopped = task.stopped or ("bfd is stopping" if self._closing else None)
            task.deaths += 0 if stopped else 1
            again = not stopped and task.deaths <= RETRIES
            if again:
                self._queue.appendleft(task)
                self._lock.notify_all()
        if stopped:
            _settle_stopped(task, stopped)
            return
        if again:
            logger.warning(
                "CPU worker (pid {}) died ({}) under {} (job id {}); running it again on a "
                "fresh worker ({} of {})",
                pid,
                how,
                task.what,
                task.owner,
                task.deaths,
                RETRIES,
            )
            return
        logger.error("CPU worker (pid {}) died ({}) under {}; given up", pid, how, task.what)
        _settle(task, _death(task.deaths, how, slot.limit if memory else 0))

    def _end_task(self, slot: _Slot) -> None:
        with self._lock:
            slot.task = None

    def _drop_process(self, slot: _Slot, kill: bool) -> tuple[int | None, int]:
        """Take the slot's worker away, killed or let end, and reap it: (its pid, its code)."""
        with self._lock:
            process, slot.process = slot.process, None
            if process is not None and kill:
                process.kill()
        if process is None:
            return None, 0
        return process.pid, process.reap(EXIT_WAIT_S)


# Threads Arrow may start in one worker, for its CPU pool and its I/O pool. Each thread's
# stack is private writable memory that RLIMIT_DATA counts against the task: Arrow's default
# of one per core took 600 MiB of a task's share on a 64-core node before any data. The
# parallelism is the workers' (one task each), so a task needs few threads of its own.
ARROW_THREADS_PER_WORKER = "2"


def _worker_env() -> dict[str, str]:
    """bfd's environment, with Arrow's thread pools sized for one task (unless set already)."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", ARROW_THREADS_PER_WORKER)  # Arrow's CPU pool reads it
    env.setdefault("ARROW_IO_THREADS", ARROW_THREADS_PER_WORKER)
    return env


def _spawn() -> _Process:
    """A worker, started from the calling thread (its PR_SET_PDEATHSIG is that thread's)."""
    ours, theirs = socketpair()
    command = [
        sys.executable,
        "-m",
        "bulkforge.daemon.cpu_worker",
        str(theirs.fileno()),
        str(os.getpid()),
    ]
    try:
        popen = subprocess.Popen(
            command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=_worker_env()
        )
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    pidfd = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(popen.pid)
    logger.debug("CPU worker started (pid {})", popen.pid)
    return _Process(popen, ours, pidfd)


class _LoadedOnly(pickle.Unpickler):
    """Unpickles only classes whose module bfd has loaded: a worker's answer never makes bfd
    import what only the work needs (pyarrow, numpy)."""

    def find_class(self, module: str, name: str):
        if module not in sys.modules:
            raise pickle.UnpicklingError(f"{module}.{name} is not loaded in bfd")
        return super().find_class(module, name)


def _load(payload: bytes):
    import io

    return _LoadedOnly(io.BytesIO(payload)).load()


def _rebuilt(answer: Answer) -> BaseException:
    """The task's exception as raised in the worker, or a WorkerError with its name and text."""
    error = None
    if answer.payload:
        with contextlib.suppress(Exception):
            error = _load(answer.payload)
    if not isinstance(error, BaseException):
        error = WorkerError(answer.error_type, answer.error)
    error.__cause__ = RemoteTraceback(answer.traceback)
    return error


def _death(deaths: int, how: str, memory_limit: int) -> WorkerDied:
    if memory_limit:
        return WorkerDied(
            "memory",
            f"died {deaths} times, each under its memory limit of {size_text(memory_limit)} "
            f"(last: {how}); the task needs more memory than its share of the memory cap",
        )
    return WorkerDied("worker_died", f"died {deaths} times (last: {how})")


def _how_it_ended(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit status {code}"


def _settle(task: _Task, error: BaseException) -> None:
    if not task.future.done():
        task.future.set_exception(error)


def _settle_stopped(task: _Task, why: str) -> None:
    """A stopped task: cancelled if it never started, else ended with TaskStopped."""
    if not task.started and task.future.cancel():
        return
    _settle(task, TaskStopped(f"{task.what}: its worker was ended: {why}"))


def _name_of(function) -> str:
    if isinstance(function, str):
        return function
    return f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', function)}"
