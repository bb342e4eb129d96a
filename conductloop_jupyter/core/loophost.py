"""Where a conductor's agents run, and how other threads reach them.

All of a conductor's state lives on one event loop and is touched only from that loop's
thread, so the hot path takes no lock. The loop is the one running where the conductor is
first used (a notebook kernel's loop: a cell returns at once and agents keep going), or,
when none is running (a plain script), a private loop on a daemon thread. Calls from any
other thread are marshalled onto the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .errors import UsageError

T = TypeVar("T")


def _run_into(
    future: concurrent.futures.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn(*args))
    except BaseException as exc:  # handed to the calling thread, which re-raises it
        future.set_exception(exc)


class LoopHost:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_id: int | None = None
        self._thread: threading.Thread | None = None
        self._bind_lock = threading.Lock()

    @property
    def owns_thread(self) -> bool:
        return self._thread is not None

    def ensure(self, can_rebind: bool) -> asyncio.AbstractEventLoop:
        """The loop, binding one on first use. ``can_rebind``: no agent is alive."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            return loop
        with self._bind_lock:
            if self.loop is not None and not self.loop.is_closed():
                return self.loop
            if self.loop is not None and not can_rebind:
                raise UsageError(
                    "the event loop this conductor's agents ran on has closed; "
                    "create a new Conductor"
                )
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                self._start_thread()
            else:
                self.loop, self.thread_id, self._thread = running, threading.get_ident(), None
            assert self.loop is not None
            return self.loop

    def _start_thread(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=main, name="conductloop-loop", daemon=True)
        thread.start()
        ready.wait()
        self.loop, self.thread_id, self._thread = loop, thread.ident, thread

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.thread_id

    def _direct(self) -> bool:
        loop = self.loop
        return loop is None or self.on_loop_thread() or not loop.is_running()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the loop thread and return its result (from any thread)."""
        if self._direct():
            return fn(*args)
        assert self.loop is not None
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(_run_into, future, fn, args)
        return future.result()

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread without waiting (from any thread)."""
        if self._direct():
            fn(*args)
        else:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(fn, *args)

    def wait(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block this (non-loop) thread for its result."""
        if self.on_loop_thread():
            coro.close()
            raise UsageError("this call would block the event loop it waits for; await it")
        loop = self.loop
        assert loop is not None
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def close(self) -> None:
        """Stop and close the private loop thread, if this host started one."""
        thread, loop = self._thread, self.loop
        if thread is None or loop is None or loop.is_closed():
            return
        # everything that needs the loop runs on its own thread: close() works from any
        # thread, even one that runs another event loop
        asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._thread = None
