"""The worker-process pool behind `apo.grading.grade_many`: per-pair wall-clock timeouts.

math-verify's own timeout uses `signal.alarm`, which only works in the main thread, and a
sympy simplification can run for minutes; so pairs that the fast path cannot decide run in
worker subprocesses that speak JSON lines (`apo.grading._worker_main`), each pair under a
wall-clock limit. A worker that runs past it is killed and replaced; the pool, and the
caller, go on. One pool per process, created on first use and re-created after a fork
(`accelerate launch` ranks each get their own) or a change of size; killed at exit.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import selectors
import subprocess
import sys
import threading
import time

logger = logging.getLogger(__name__)


class Worker:
    """One grading subprocess speaking JSON lines on stdin/stdout."""

    def __init__(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder that holds apo/
        code = f"import sys; sys.path.insert(0, {root!r}); from apo import grading; grading._worker_main()"
        self.process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, encoding="utf-8", bufsize=1)
        self.ready = False
        self.task: int | None = None
        self.started_at = 0.0

    def send(self, task: int, pred: str, gold: str) -> None:
        self.task, self.started_at = task, time.monotonic()
        self.process.stdin.write(json.dumps({"pred": pred, "gold": gold}) + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


def limit_cpu_seconds(seconds: int) -> None:
    """Let the kernel kill this worker after `seconds` more CPU seconds (SIGXCPU).

    The parent kills a worker at the pair's timeout; this limit only matters when the parent
    died without doing so (an orphaned worker stuck in sympy would otherwise spin forever).
    """
    if os.name != "posix":
        return
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(usage.ru_utime + usage.ru_stime) + seconds
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


class GraderPool:
    """Worker subprocesses reused across `grade_many` calls; a hung worker is killed and replaced.

    Each worker holds at most one pair. A pair's clock starts when it is sent to a warmed-up
    worker, so worker start-up (imports, ~2-5 s) never counts against a pair.
    """

    startup_limit_s = 120.0
    max_startup_deaths = 3

    def __init__(self, num_workers: int) -> None:
        self.num_workers = num_workers
        self.owner_pid = os.getpid()
        self.workers = [Worker() for _ in range(num_workers)]
        self.lock = threading.Lock()
        self.startup_deaths = 0

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers = []

    def run(self, pairs: list[tuple[str, str]], timeout: float) -> list[bool | str]:
        """Verdicts for `pairs` in order: True/False, or "timeout"/"error".

        Raises RuntimeError when no worker can start (e.g. math_verify is not importable).
        """
        with self.lock:
            results: list[bool | str | None] = [None] * len(pairs)
            queue = list(range(len(pairs)))[::-1]
            started = time.monotonic()
            while queue or any(w.task is not None for w in self.workers):
                self._assign(queue, pairs, results)
                self._collect(results, timeout)
                self._expire(results, timeout)
                if not any(w.ready for w in self.workers) and time.monotonic() - started > self.startup_limit_s:
                    raise RuntimeError(f"no grader worker became ready within {self.startup_limit_s:.0f} s; check that "
                                       f"{sys.executable} -c 'from apo import grading; grading._worker_main()' starts")
            return [r if r is not None else "error" for r in results]

    def _assign(self, queue: list[int], pairs: list[tuple[str, str]], results: list) -> None:
        for worker in list(self.workers):
            if worker.ready and worker.task is None and queue:
                task = queue.pop()
                try:
                    worker.send(task, *pairs[task])
                except OSError:  # the worker died between pairs
                    results[task] = "error"
                    self._replace(worker)

    def _collect(self, results: list, timeout: float) -> None:
        """Wait until the nearest deadline for replies; record verdicts and readiness."""
        now = time.monotonic()
        deadlines = [w.started_at + timeout - now for w in self.workers if w.task is not None]
        with selectors.DefaultSelector() as selector:
            for worker in self.workers:
                selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
            events = selector.select(max(0.0, min(deadlines)) if deadlines else 0.5)
        for key, _ in events:
            worker = key.data
            line = worker.process.stdout.readline()
            try:
                reply = json.loads(line) if line else None
            except json.JSONDecodeError:
                reply = None
            if reply is None:  # the worker died or wrote garbage
                if worker.task is not None:
                    results[worker.task] = "error"
                self._note_death(worker)
                self._replace(worker)
            elif "ready" in reply:
                worker.ready = True
                self.startup_deaths = 0
            elif worker.task is not None:
                results[worker.task] = reply["verdict"] if "verdict" in reply else "error"
                if "error" in reply:
                    logger.debug("grader worker error: %s", reply["error"])
                worker.task = None

    def _expire(self, results: list, timeout: float) -> None:
        now = time.monotonic()
        for worker in list(self.workers):
            if worker.task is not None and now - worker.started_at > timeout:
                results[worker.task] = "timeout"
                self._replace(worker)

    def _note_death(self, worker: Worker) -> None:
        if worker.ready:
            return
        self.startup_deaths += 1
        if self.startup_deaths >= self.max_startup_deaths:
            raise RuntimeError(f"grader workers exited {self.startup_deaths} times before becoming ready (exit code "
                               f"{worker.process.poll()}); run {sys.executable} -c 'from apo import grading; "
                               f"grading._worker_main()' to see the error")

    def _replace(self, worker: Worker) -> None:
        worker.kill()
        self.workers[self.workers.index(worker)] = Worker()


_POOL: GraderPool | None = None
_POOL_LOCK = threading.Lock()


def shared_pool(num_workers: int) -> GraderPool:
    """The process-wide pool, created on first use and re-created after a fork or a resize."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and (_POOL.owner_pid != os.getpid() or _POOL.num_workers != num_workers):
            if _POOL.owner_pid == os.getpid():
                _POOL.close()
            _POOL = None
        if _POOL is None:
            _POOL = GraderPool(num_workers)
        return _POOL


def shutdown_pool() -> None:
    """Kill the shared worker pool (also registered with atexit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL.owner_pid == os.getpid():
            _POOL.close()
        _POOL = None


atexit.register(shutdown_pool)
