"""``smg serve --workers N``: N worker processes serving one port, supervised by the process that
started them.

Each worker is a whole ``smg serve`` (its own event loop, engine connections and tokenizer
caches) listening with ``SO_REUSEPORT``: the kernel spreads new connections over the workers'
sockets. The supervisor binds the port first without listening (to hold it and learn the port
``0`` picked), and gives the workers what they share:

* a ``PROMETHEUS_MULTIPROC_DIR``, so that ``/metrics`` in any worker shows the whole server
  (:mod:`smg.metrics`);
* an ``SMG_SHARED_STATE`` file, so that admission limits and per-key rate limits are the
  server's, not each worker's (:mod:`smg.shared_state`).

A worker that exits while the server runs is logged and started again (after 1 s, doubling to
30 s while it keeps dying young). SIGINT or SIGTERM stops every worker gracefully (each finishes its
requests in flight, as one ``smg serve`` does) and then the supervisor.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

from smg import shared_state

log = logging.getLogger("smg.supervisor")

READY_LINE = "smg serving"  # what a worker prints once it listens
_MAX_BACKOFF = 30.0
_YOUNG = 10.0  # seconds: a worker that dies younger than this backs off further
_STOP_GRACE = 40.0  # seconds the workers get to finish (their own shutdown grace is 30)


def worker_count(value: str) -> int:
    """``--workers``: a positive number, or ``auto`` (the cores this process may run on)."""
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    count = int(value)
    if not 1 <= count <= shared_state.MAX_PROCESSES:
        raise ValueError(f"--workers must be 1 to {shared_state.MAX_PROCESSES} or auto")
    return count


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` that other sockets of this user may bind too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def die_with_supervisor() -> None:
    """In a worker process: be sent SIGTERM if the supervisor dies, even by SIGKILL (Linux), so
    that no worker outlives it holding the port."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # (not Linux: the supervisor's SIGTERM on its way out is all there is)
    if os.getppid() == 1:  # it died before the call
        os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """Start ``workers`` copies of ``smg serve <worker_args>`` on ``host:port`` and keep them up."""

    def __init__(self, worker_args: Sequence[str], workers: int, host: str, port: int) -> None:
        self.worker_args, self.workers, self.host, self.port = list(worker_args), workers, host, port
        self.procs: dict[int, subprocess.Popen] = {}
        self.restarts = 0
        self._stopping = False
        self._ready = [asyncio.Event() for _ in range(workers)]  # set when worker i first says it serves

    async def run(self) -> int:
        holder = reuse_port_socket(self.host, self.port)  # held, never listening: it takes no connection
        self.port = holder.getsockname()[1]
        directory = tempfile.mkdtemp(prefix="smg-serve-")
        metrics_dir = os.path.join(directory, "metrics")
        os.mkdir(metrics_dir)
        state = shared_state.SharedState.create(os.path.join(directory, "shared"))
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir, shared_state.ENV: state.path}
        loop, stop = asyncio.get_running_loop(), asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        keepers = [asyncio.create_task(self._keep(index, env, metrics_dir)) for index in range(self.workers)]
        try:
            ready = asyncio.gather(*(event.wait() for event in self._ready))
            waiting = asyncio.ensure_future(stop.wait())
            await asyncio.wait([ready, waiting], return_when=asyncio.FIRST_COMPLETED)
            if ready.done() and not ready.exception():
                print(f"{READY_LINE} an OpenAI-compatible API on http://{self.host}:{self.port}/v1 "
                      f"({self.workers} worker processes)", flush=True)
            await waiting
        finally:
            self._stopping = True
            await self._stop_all()
            for keeper in keepers:
                keeper.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            holder.close()
            state.close()
            shutil.rmtree(directory, ignore_errors=True)
        return 0

    async def _keep(self, index: int, env: dict, metrics_dir: str) -> None:
        """Run worker ``index``; start it again whenever it exits while the server runs."""
        from prometheus_client.multiprocess import mark_process_dead

        backoff = 1.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = time.monotonic()
            # (subprocess, not the event loop's: uvloop forks where CPython spawns with vfork, and a
            # fork beside --demo's gRPC threads is logged by gRPC's fork handlers)
            proc = subprocess.Popen([sys.executable, "-m", "smg", "serve", *self.worker_args, "--host", self.host,
                                     "--port", str(self.port), "--worker-process"], env=env, stdout=subprocess.PIPE)
            self.procs[index] = proc
            exited = loop.create_future()
            threading.Thread(target=self._watch, args=(loop, index, proc, exited), daemon=True,
                             name=f"smg-worker-{index}").start()
            code = await exited
            mark_process_dead(proc.pid, metrics_dir)  # (its live gauges leave the sums)
            if self._stopping:
                return
            self.restarts += 1
            backoff = min(_MAX_BACKOFF, backoff * 2) if time.monotonic() - started < _YOUNG else 1.0
            log.error("worker process %d (pid %d) exited with code %s; starting it again in %g s", index, proc.pid,
                      code, backoff)
            await asyncio.sleep(backoff)

    def _watch(self, loop: asyncio.AbstractEventLoop, index: int, proc: subprocess.Popen,
               exited: asyncio.Future) -> None:
        """(A thread per worker.) Pass the worker's output on, note when it says it serves, and
        set ``exited`` to its exit code."""
        assert proc.stdout is not None
        ready = self._ready[index]
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(READY_LINE):
                loop.call_soon_threadsafe(ready.set)
                continue  # (the supervisor says it once for all)
            print(f"[worker {index}] {line}", flush=True)
        code = proc.wait()
        loop.call_soon_threadsafe(lambda: exited.done() or exited.set_result(code))

    async def _stop_all(self) -> None:
        procs = [p for p in self.procs.values() if p.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
