"""A test server on 127.0.0.1 driven by an event loop on a thread of its own.

Our fault-injecting origin and our fake Hugging Face Hub share this harness:
start() returns once the server listens (or raises what stopped it), stop()
ends it from the test's thread, and both work as a context manager.
"""

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Self


class BackgroundServer:
    thread_name = "test-server"

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0

    async def _serve(self) -> Callable[[], Awaitable[None]]:
        """Start listening and set self.port; return what shuts the server down."""
        raise NotImplementedError

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"{self.thread_name} already started")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"{self.thread_name} failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop_event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start() if it happened before ready
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        shutdown = await self._serve()
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await shutdown()
