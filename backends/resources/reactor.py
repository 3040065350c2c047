"""One thread that follows every running local job: its output as it comes, its exit, then its end.

Why not a thread per job: every line and every exit was then a hand-off between threads through
the interpreter lock, and the next job started only once the ended job's thread got the lock
back (profiled: a third of the dispatch overhead on two cores). Here the thread that sees a job
exit ends it, and the experiment's callback, run on this same thread, starts the next one.

A job's end is its script's exit, not the end of its output: a background child left holding the
pipe must not keep the job alive. Once the script has exited, what is already in the pipe is
read; a child that keeps writing is read for at most DRAIN_LIMIT seconds.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable

from .output import MAX_LINE
from .processes import DRAIN_LIMIT, exit_fd

logger = logging.getLogger(__name__)

READ_SIZE = 65536
#: reads of one exited job's pipe per turn of the loop, so that a child writing without end
#: cannot hold up the other jobs while it is drained
DRAIN_READS = 16

OnChunk = Callable[[bytes], None]
#: called once, on the reactor's thread, when the followed process has exited and its output is
#: read (None), or when following it failed (the exception: the process may still run)
OnEnd = Callable[[BaseException | None], None]


class _Followed:
    """A process being followed: its pipe, its exit, the line it is in the middle of."""

    __slots__ = ("proc", "out", "exit", "waiter", "buf", "exited_at", "eof", "ended", "on_chunk", "on_end")

    def __init__(self, proc: subprocess.Popen[bytes], on_chunk: OnChunk, on_end: OnEnd) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.out = proc.stdout.fileno()
        self.exit, self.waiter = exit_fd(proc)
        self.buf = b""
        self.exited_at: float | None = None
        self.eof = False
        self.ended = False
        self.on_chunk = on_chunk
        self.on_end = on_end


class ProcessReactor:
    """Follows processes started elsewhere (`follow`) from one thread, started when there is
    something to follow and ended when there is nothing left; also runs deferred calls
    (`defer`) on that thread, so that a job that could not even start ends the same way as one
    that ran."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0  # followed processes and deferred calls not yet over
        self._thread: threading.Thread | None = None
        # made when the thread starts and closed when it ends: a manager has no close()
        self._epoll: select.epoll | None = None
        self._wake_r = self._wake_w = -1
        self._by_fd: dict[int, _Followed] = {}
        self._draining: set[_Followed] = set()
        self._deferred: deque[Callable[[], None]] = deque()

    @property
    def thread(self) -> threading.Thread | None:
        """The thread following the processes now (None while there are none)."""
        return self._thread

    def follow(self, proc: subprocess.Popen[bytes], on_chunk: OnChunk, on_end: OnEnd) -> None:
        """Follow a started process with `stdout` a pipe: its output in lines (at most MAX_LINE
        bytes each, as `readline(MAX_LINE)` gives them) to `on_chunk`, then `on_end`. OSError
        (e.g. out of descriptors) when it can't be followed: then nothing of it is kept here."""
        followed = _Followed(proc, on_chunk, on_end)
        os.set_blocking(followed.out, False)
        with self._lock:  # the thread can't end before this job counts, nor see half of it
            epoll = self._start_thread()
            try:
                epoll.register(followed.out, select.EPOLLIN)
                try:
                    epoll.register(followed.exit, select.EPOLLIN)
                except BaseException:
                    epoll.unregister(followed.out)
                    raise
            except BaseException:
                os.close(followed.exit)
                raise
            self._active += 1
            self._by_fd[followed.out] = followed
            self._by_fd[followed.exit] = followed

    def defer(self, call: Callable[[], None]) -> None:
        """Run `call` on the reactor's thread, after what it is doing now."""
        with self._lock:  # the thread can't end (and close the pipe) before the call has run
            try:
                self._start_thread()
            except OSError:  # no descriptor left for the thread's epoll: a thread of its own
                self._active += 1
                threading.Thread(target=self._run_alone, args=(call,), daemon=True).start()
                return
            self._active += 1
            self._deferred.append(call)
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:  # wake-ups are waiting already
                pass

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every followed process has ended and its `on_end` has returned (and every
        deferred call has run); False when `timeout` passed first. Not from a job's callback
        (the reactor's own thread): that would wait for itself."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("waiting for the jobs from a job's callback would wait for ever")
        with self._lock:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    # -- the reactor's thread ------------------------------------------------------------------

    def _start_thread(self) -> select.epoll:
        """The running thread's epoll, starting the thread first if none runs (under the lock)."""
        if self._epoll is None:
            epoll = select.epoll()
            try:
                self._wake_r, self._wake_w = os.pipe()
            except OSError:
                epoll.close()
                raise
            self._epoll = epoll
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._epoll.register(self._wake_r, select.EPOLLIN)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, args=(self._epoll,), name=f"aup-{self._name}", daemon=True
            )
            self._thread.start()
        return self._epoll

    def _loop(self, epoll: select.epoll) -> None:
        while True:
            with self._lock:
                if self._active == 0:
                    self._thread = self._epoll = None
                    epoll.close()
                    os.close(self._wake_r)
                    os.close(self._wake_w)
                    self._idle.notify_all()
                    return
                timeout = self._drain_timeout()
            # resolved before any is handled: a job ended in this round frees descriptors that
            # the next job, started by its callback, may be given again
            events = [(fd, self._by_fd.get(fd)) for fd, _ in epoll.poll(timeout)]
            for fd, followed in events:
                if fd == self._wake_r:
                    self._run_deferred()
                    continue
                if followed is None or followed.ended:  # ended by an earlier event of this round
                    continue
                try:
                    if fd == followed.exit:
                        followed.exited_at = time.monotonic()
                        self._forget(followed.exit)
                    else:
                        self._read(followed, 1)
                    if followed.exited_at is not None:
                        self._drain(followed)
                except Exception as exc:  # e.g. its log can't be written: end it, with why
                    self._end(followed, exc)
            if self._draining:
                now = time.monotonic()
                for followed in [f for f in self._draining if now - (f.exited_at or now) > DRAIN_LIMIT]:
                    self._end(followed, None)

    def _drain_timeout(self) -> float:
        if not self._draining:
            return -1
        first = min(f.exited_at or 0.0 for f in self._draining)
        return max(0.0, first + DRAIN_LIMIT - time.monotonic()) + 0.001

    def _run_deferred(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        while True:
            with self._lock:
                if not self._deferred:
                    return
                call = self._deferred.popleft()
            self._run_alone(call)

    def _run_alone(self, call: Callable[[], None]) -> None:
        """Run a deferred call; it counts as over once it has returned."""
        try:
            call()
        except Exception:
            logger.exception("a deferred call of %s failed", self._name)
        finally:
            self._done_one()

    def _read(self, followed: _Followed, reads: int) -> bool:
        """Read up to `reads` times what the pipe holds; True when it is empty or at its end."""
        for _ in range(reads):
            try:
                data = os.read(followed.out, READ_SIZE)
            except BlockingIOError:
                return True
            if not data:
                followed.eof = True
                self._forget(followed.out)
                if followed.buf:
                    followed.on_chunk(followed.buf)
                    followed.buf = b""
                return True
            self._lines(followed, data)
        return False

    def _lines(self, followed: _Followed, data: bytes) -> None:
        buf = followed.buf + data if followed.buf else data
        start = 0
        on_chunk = followed.on_chunk
        while True:
            nl = buf.find(b"\n", start, start + MAX_LINE)
            if nl != -1:
                on_chunk(buf[start : nl + 1])
                start = nl + 1
            elif len(buf) - start >= MAX_LINE:
                on_chunk(buf[start : start + MAX_LINE])
                start += MAX_LINE
            else:
                break
        followed.buf = buf[start:]

    def _drain(self, followed: _Followed) -> None:
        """The script has exited: end the job once its pipe is empty (or at its end)."""
        if followed.eof or self._read(followed, DRAIN_READS):
            self._end(followed, None)
        else:
            self._draining.add(followed)

    def _end(self, followed: _Followed, crash: BaseException | None) -> None:
        followed.ended = True
        if self._by_fd.get(followed.exit) is followed:
            self._forget(followed.exit)
        if not followed.eof and self._by_fd.get(followed.out) is followed:
            self._forget(followed.out)
        self._draining.discard(followed)
        os.close(followed.exit)
        try:
            if crash is None and followed.buf:
                followed.on_chunk(followed.buf)
        except Exception as exc:
            crash = exc
        try:
            followed.on_end(crash)
        except Exception:
            logger.exception("ending a job followed by %s failed", self._name)
        finally:
            self._done_one()

    def _forget(self, fd: int) -> None:
        with self._lock:
            self._by_fd.pop(fd, None)
            if self._epoll is not None:
                try:
                    self._epoll.unregister(fd)
                except (OSError, ValueError):  # already closed
                    pass

    def _done_one(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self._idle.notify_all()
