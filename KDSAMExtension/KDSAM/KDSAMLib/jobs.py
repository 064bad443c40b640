"""Work off the main thread, polled by the widget's QTimer.

:class:`BackgroundJob` runs a function in a daemon thread (encoding a slice, loading a model,
propagating); :class:`ProcessJob` runs a command (``PythonSlicer -m kdsam_train ...``) as a
child process whose output a reader thread collects. Neither blocks nor calls back into Qt:
the widget polls ``done`` / ``progress`` / ``read_lines()`` and touches MRML only on the main
thread. Cancelling a process ends its whole process tree.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class BackgroundJob:
    """``fn(progress=..., should_stop=...)`` in a thread; ``progress(done, total)`` is thread-safe.

    ``fn`` may ignore the two keyword arguments by not declaring them: pass ``with_callbacks=False``.
    """

    def __init__(self, fn: Callable, *args, name: str = "job", with_callbacks: bool = True, **kwargs) -> None:
        self.name = name
        self.result = None
        self.error: BaseException | None = None
        self.done_count, self.total_count = 0, 0
        self._stop = threading.Event()
        self._done = threading.Event()
        if with_callbacks:
            kwargs.update(progress=self._progress, should_stop=self._stop.is_set)
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), name=f"kdsam-{name}", daemon=True)
        self.started = time.perf_counter()

    def start(self) -> "BackgroundJob":
        self._thread.start()
        return self

    def _run(self, fn, args, kwargs) -> None:
        try:
            self.result = fn(*args, **kwargs)
        except BaseException as e:  # reported to the main thread, which decides how to show it
            self.error = e
            log.debug("job %s failed", self.name, exc_info=True)
        finally:
            self._done.set()

    def _progress(self, done: int, total: int) -> None:
        self.done_count, self.total_count = int(done), int(total)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def fraction(self) -> float | None:
        return self.done_count / self.total_count if self.total_count else None

    def cancel(self) -> None:
        self._stop.set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


# "epoch 3/10", "step 120/500", "[3/10]", "progress: 0.42", "42%" -- what training logs print
_FRACTION = re.compile(r"(?:epoch|step|iter(?:ation)?|batch)?\s*\[?\s*(\d+)\s*/\s*(\d+)\s*\]?", re.I)
_PROGRESS = re.compile(r"progress[\"']?\s*[:=]\s*([0-9.]+)", re.I)
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")


def parse_progress(line: str) -> float | None:
    """A progress fraction 0..1 from one log line, or None (JSON ``"progress": 0.4``, ``3/10``, ``40%``)."""
    m = _PROGRESS.search(line)
    if m:
        v = float(m.group(1))
        return min(v / 100.0 if v > 1 else v, 1.0)
    m = _PERCENT.search(line)
    if m:
        return min(float(m.group(1)) / 100.0, 1.0)
    m = _FRACTION.search(line)
    if m and int(m.group(2)) > 0 and int(m.group(1)) <= int(m.group(2)):
        return int(m.group(1)) / int(m.group(2))
    return None


class ProcessJob:
    """A child process with its merged stdout/stderr streamed line by line, and a tree-wide cancel."""

    def __init__(self, command: list[str], *, cwd: str | None = None, env: dict | None = None,
                 log_path: str | None = None) -> None:
        self.command = [str(c) for c in command]
        self.cwd, self.env, self.log_path = cwd, env, log_path
        self.progress: float | None = None
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self.cancelled = False

    def start(self) -> "ProcessJob":
        kw: dict = {}
        if os.name == "nt":
            kw["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kw["start_new_session"] = True  # own process group: cancel ends the whole tree
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        log.info("starting %s", " ".join(self.command))
        self._proc = subprocess.Popen(self.command, cwd=self.cwd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                      encoding="utf-8", errors="replace", bufsize=1, **kw)
        self._reader = threading.Thread(target=self._read, name="kdsam-process-reader", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        logf = open(self.log_path, "a", encoding="utf-8") if self.log_path else None
        try:
            for line in self._proc.stdout:
                # tqdm redraws with carriage returns: keep the last state of the line
                line = line.rstrip("\n").split("\r")[-1]
                self._queue.put(line)
                if logf:
                    logf.write(line + "\n")
                    logf.flush()
        finally:
            if logf:
                logf.close()

    def read_lines(self) -> list[str]:
        """Lines printed since the last call (main thread); updates ``progress``."""
        new = []
        while True:
            try:
                new.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for line in new:
            p = parse_progress(line)
            if p is not None:
                self.progress = p
        self.lines.extend(new)
        return new

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def done(self) -> bool:
        """Exited and all its output read by the reader thread."""
        return self._proc is not None and self._proc.poll() is not None and not (
            self._reader and self._reader.is_alive())

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def cancel(self, grace_s: float = 5.0) -> None:
        """End the process and its children: SIGTERM to the group, SIGKILL after ``grace_s``."""
        if not self.running:
            return
        self.cancelled = True
        kill_tree(self._proc.pid, proc=self._proc, grace_s=grace_s)

    def wait(self, timeout: float | None = None) -> int | None:
        if self._proc is None:
            return None
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self._reader:
            self._reader.join(timeout)
        return self._proc.returncode


def kill_tree(pid: int, *, proc: subprocess.Popen | None = None, grace_s: float = 5.0) -> None:
    """End process ``pid`` and its descendants (its process group on POSIX, ``taskkill /T`` on Windows).

    SIGTERM first so training can write its resume state, SIGKILL to whatever is left after ``grace_s``.
    """
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False)
        return
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    if pgid == os.getpgid(0):  # never signal our own group
        os.kill(pid, signal.SIGTERM)
        return
    os.killpg(pgid, signal.SIGTERM)
    if proc is not None:
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    else:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)  # children that ignored SIGTERM
    except (ProcessLookupError, PermissionError):
        pass


def python_executable() -> str:
    """The interpreter for child processes: ``PythonSlicer`` inside Slicer, else this Python."""
    exe = sys.executable
    base = os.path.basename(exe).lower()
    if base.startswith("slicer"):  # some builds report the Slicer launcher itself
        cand = os.path.join(os.path.dirname(exe), "PythonSlicer" + (".exe" if os.name == "nt" else ""))
        if os.path.exists(cand):
            return cand
    return exe
