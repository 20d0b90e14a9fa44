"""A child ``concord`` process for the admin dialogs: lines out, one clear ending.

:class:`ChildProcess` wraps :class:`QProcess` (separate stdout and stderr
channels), turns both streams into complete lines (:class:`LineSplitter`),
keeps the last stderr lines for an error message, and reports the end once,
whether the program exited, was killed by a signal, or never started.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Signal

from app.admin.commands import child_environment
from app.admin.progress import LineSplitter

#: Exit status of ``concord train`` after a cancel (SIGINT / SIGTERM) with a resumable checkpoint.
CANCELLED_EXIT = 130


class ChildProcess(QObject):
    """One child program at a time; its output as lines, its end as one signal.

    Signals: ``stdoutLine(str)``, ``stderrLine(str)``, ``ended(int, bool)``
    (exit code, and True when the process did not exit by itself: killed by a
    signal or failed to start; the code is then -1), ``failedToStart(str)``.
    """

    stdoutLine = Signal(str)
    stderrLine = Signal(str)
    ended = Signal(int, bool)
    failedToStart = Signal(str)

    def __init__(self, parent: QObject | None = None, *, stderr_lines: int = 40) -> None:
        super().__init__(parent)
        self._process: QProcess | None = None
        self._stdout = LineSplitter()
        self._stderr = LineSplitter()
        self.stderr_tail: deque[str] = deque(maxlen=stderr_lines)
        self.program = ""
        self.arguments: list[str] = []
        self._ended = False

    # -- control -------------------------------------------------------------------

    def start(
        self,
        program: str,
        arguments: Sequence[str],
        *,
        environment: Mapping[str, str] | None = None,
        working_directory: str | None = None,
    ) -> None:
        """Start ``program arguments``; RuntimeError if one is already running."""
        if self.running():
            raise RuntimeError("a process is already running")
        self._stdout, self._stderr = LineSplitter(), LineSplitter()
        self.stderr_tail.clear()
        self._ended = False
        self.program, self.arguments = program, list(arguments)
        process = QProcess(self)
        process.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        env = QProcessEnvironment()
        for key, value in child_environment(environment).items():
            env.insert(key, value)
        process.setProcessEnvironment(env)
        if working_directory:
            process.setWorkingDirectory(working_directory)
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._finished)
        process.errorOccurred.connect(self._error)
        self._process = process
        process.start(program, self.arguments)

    def running(self) -> bool:
        return (self._process is not None
                and self._process.state() != QProcess.ProcessState.NotRunning)

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM on Unix): ``concord train`` saves a checkpoint first."""
        if self.running():
            assert self._process is not None
            self._process.terminate()

    def kill(self) -> None:
        """Stop the child at once (SIGKILL); nothing is saved."""
        if self.running():
            assert self._process is not None
            self._process.kill()

    def pid(self) -> int:
        return int(self._process.processId()) if self._process is not None else 0

    def wait(self, msecs: int = 30_000) -> bool:
        """Block until the child ends (for shutdown paths and tests)."""
        if self._process is None:
            return True
        return bool(self._process.waitForFinished(msecs))

    # -- output --------------------------------------------------------------------

    def _read_stdout(self) -> None:
        if self._process is not None:
            for line in self._stdout.feed(self._process.readAllStandardOutput().data()):
                self.stdoutLine.emit(line)

    def _read_stderr(self) -> None:
        if self._process is not None:
            for line in self._stderr.feed(self._process.readAllStandardError().data()):
                self._stderr_line(line)

    def _stderr_line(self, line: str) -> None:
        if line.strip():
            self.stderr_tail.append(line)
        self.stderrLine.emit(line)

    def _drain(self) -> None:
        self._read_stdout()
        self._read_stderr()
        for line in self._stdout.flush():
            self.stdoutLine.emit(line)
        for line in self._stderr.flush():
            self._stderr_line(line)

    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        if self._ended:
            return
        self._drain()
        self._ended = True
        crashed = status == QProcess.ExitStatus.CrashExit
        self.ended.emit(-1 if crashed else int(code), crashed)

    def _error(self, error: QProcess.ProcessError) -> None:
        if error != QProcess.ProcessError.FailedToStart or self._ended:
            return  # a crash is reported by finished()
        self._ended = True
        detail = self._process.errorString() if self._process is not None else ""
        self.failedToStart.emit(f"could not start {self.program}: {detail}")
        self.ended.emit(-1, True)

    def last_error_lines(self, count: int = 6) -> list[str]:
        """The child's own error lines (``concord ...: error``) if any, else the last stderr lines."""
        lines = list(self.stderr_tail)
        own = [line for line in lines if line.startswith("concord ")]
        chosen = own or lines
        return chosen[-count:]


__all__ = ["CANCELLED_EXIT", "ChildProcess"]
