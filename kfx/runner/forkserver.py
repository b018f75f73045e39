"""The fork server: one warm interpreter per run, one forked process per step.

A fresh interpreter per step pays the imports of TensorFlow, TFDV, TFT, TFMA
and Beam again (5-8 s a step). The server is started once per `kfx run`,
imports the libraries it is told to preload *before any thread starts* (a
process forked after TensorFlow has executed anything hangs; forked after
the imports alone, it works), and never runs a step itself: for each step it
forks a child that

- sets its own working directory and environment (the step's, applied to
  os.environ), writes stdout and stderr to the step's log pipe;
- runs a KFP lightweight component's command in-process: the IR's
  `sh -ec 'program_path=$(mktemp -d); printf "%s" "$0" > .../ephemeral_component.py;
  _KFP_RUNTIME=true python3 -m kfp.dsl.executor_main --component_module_path ... "$@"'
  SOURCE ARGS...` becomes that file in a fresh temporary directory and
  `runpy.run_module("kfp.dsl.executor_main")` with the same arguments;
- execs anything else (and everything, when the server is not safe to fork
  or the step's environment differs from the run's beyond PER_STEP_ENV) as
  the plain command, as a subprocess would.

Exit codes are a process's: an exception is a traceback in the log and 1,
`sys.exit(n)` is n, a signal -N. The server dies with the runner
(PR_SET_PDEATHSIG) and steps die with the server; when the runner closes the
control socket, the server kills what still runs, reaps it and exits.

Nothing waits for what it does not use: when the run preloads libraries, the launcher
also starts a light server (kfp's executor only), and a step whose code never imports
a preloaded library (found by reading its source and, through them, the source of the
first-party modules it imports: `uses_preload`) is forked from the light server, so
it starts while the heavy one is still importing TensorFlow.

Wire: the launcher and server share a SOCK_SEQPACKET control socket. Per step
the launcher passes (SCM_RIGHTS) one end of a fresh socket pair and the write
end of the log pipe, then writes a JSON request line on the pair; the server
answers `{"pid": N}` once forked and `{"exit": CODE}` once reaped.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence

from kfx.runner.launchers import PER_STEP_ENV, Step, copy_lines, process_env
from kfx.runner.preload import lightweight_source, stack_env, uses_preload

_EXECUTOR_MAIN = "kfp.dsl.executor_main"
_PR_SET_PDEATHSIG = 1


class ForkServerError(RuntimeError):
    pass


class ForkServerLauncher:
    """`--executor process` (the default): each step a process forked from the run's fork server
    (from the light one when its code uses none of the preload: `uses_preload`)."""
    name = "process"

    def __init__(self, preload: Sequence[str] = ()):
        self.preload = tuple(preload)
        self.heavy: Optional[_ServerProcess] = None
        self.light: Optional[_ServerProcess] = None   # only when something is preloaded
        self.stack_env: dict[str, str] = {}   # what the heavy server and its steps add to the run's env
        self._in_session = False
        self.running: dict[str, int] = {}   # task -> pid of its process
        self.max_rss_kb: dict[str, int] = {}   # task -> peak RSS of its process (its server reaps it)

    @property
    def server(self) -> Optional[subprocess.Popen]:
        return self.heavy.process if self.heavy else None

    @property
    def ready(self) -> dict:
        """The (preloading) server's report: what it preloaded, what it skipped."""
        return self.heavy.ready if self.heavy else {}

    @contextlib.contextmanager
    def session(self, run_env: dict[str, str], log_dir: Path):
        """Starts the server(s) for one run (in the background: a step waits only for the imports
        of the server it is forked from); stops them, and whatever still runs, when the run ends."""
        with contextlib.ExitStack() as stack:
            self.light = None
            self.stack_env = stack_env(self.preload, os.environ)
            self.heavy = stack.enter_context(_ServerProcess.started(
                self.preload, {**self.stack_env, **run_env}, log_dir / "_forkserver.log"))
            if self.preload:
                self.light = stack.enter_context(_ServerProcess.started((), run_env,
                                                                        log_dir / "_forkserver_light.log"))
            self._in_session = True
            try:
                yield self
            finally:
                self._in_session = False

    def server_for(self, step: Step) -> "_ServerProcess":
        if not self._in_session:
            raise ForkServerError("launch outside a run session: the runner opens one per run")
        if self.light is not None and not uses_preload(step.argv, self.preload):
            return self.light
        return self.heavy

    def launch(self, step: Step, log_path: Path, on_line: Callable[[str], None]) -> int:
        server = self.server_for(step)
        read_end, write_end = os.pipe()
        ours, theirs = socket.socketpair()
        try:
            server.send_step(theirs.fileno(), write_end)
        except BaseException:
            ours.close()
            os.close(read_end)
            raise
        finally:
            theirs.close()
            os.close(write_end)
        with ours, ours.makefile("rwb") as wire, open(read_end, errors="replace") as out, \
                open(log_path, "w") as log:
            env = {**self.stack_env, **step.env} if server is self.heavy else step.env
            wire.write(json.dumps({"argv": step.argv, "env": process_env(env),
                                   "cwd": str(step.workdir)}).encode() + b"\n")
            wire.flush()
            self.running[step.task] = _answer(wire)["pid"]
            try:
                copy_lines(out, log, on_line)   # until every holder of the pipe's write end is gone
                ended = _answer(wire)
            finally:
                self.running.pop(step.task, None)
        self.max_rss_kb[step.task] = ended["max_rss_kb"]
        return ended["exit"]


class _ServerProcess:
    """One fork server process, its control socket and its ready report."""

    def __init__(self, process: subprocess.Popen, control: socket.socket, log_name: str):
        self.process, self.control, self.log_name = process, control, log_name
        self.ready: dict = {}
        self._lock = threading.Lock()

    @classmethod
    @contextlib.contextmanager
    def started(cls, preload: Sequence[str], run_env: dict[str, str], log_path: Path):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "kfx.runner.forkserver", str(theirs.fileno()), str(os.getpid()),
                 *preload],
                pass_fds=[theirs.fileno()], env=process_env(run_env), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT)
        theirs.close()
        server = cls(process, ours, log_path.name)
        try:
            yield server
        finally:
            if not server.ready:    # no step ran on it (a cached run): no need to wait for its imports
                process.kill()
            ours.close()            # the server kills what still runs, reaps it and exits
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def send_step(self, wire_fd: int, log_fd: int) -> None:
        """Hands the server one step's wire and log pipe, once its imports are done."""
        with self._lock:
            if not self.ready:
                message = self.control.recv(1 << 16)
                if not message:
                    raise ForkServerError(f"the fork server exited while starting (exit code "
                                          f"{self.process.wait()}); see its log {self.log_name} "
                                          f"beside the step logs")
                self.ready = json.loads(message)
            socket.send_fds(self.control, [b"step"], [wire_fd, log_fd])


def _answer(wire) -> dict:
    line = wire.readline()
    if not line:
        raise ForkServerError("the fork server stopped answering (see _forkserver.log beside the step logs)")
    return json.loads(line)


# ===================================================================== server
def _die_with(parent_pid: int, sig: int) -> None:
    """Linux: deliver `sig` to this process when its parent dies (none is left behind)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent_pid:   # it died before the call
        os.kill(os.getpid(), sig)


def _preload(modules: Sequence[str]) -> dict:
    """Imports the libraries steps would import. kfp's executor first, with kfp's runtime switch
    (its package then skips kfp.client and kubernetes, as the step's own command does)."""
    import importlib
    loaded, skipped = [], {}
    run_env = dict(os.environ)
    for name in (_EXECUTOR_MAIN, *modules):
        if name == _EXECUTOR_MAIN:
            os.environ["_KFP_RUNTIME"] = "true"
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as err:  # noqa: BLE001 - not installed or broken here: steps import it themselves
            skipped[name] = f"{type(err).__name__}: {err}"
        finally:
            os.environ.clear()
            os.environ.update(run_env)
    return {"preloaded": loaded, "skipped": skipped}


class _Server:
    def __init__(self, control: socket.socket):
        self.control = control
        self.env = dict(os.environ)         # the run's environment, as the server was started
        self.children: dict[int, tuple[int, socket.socket]] = {}   # pidfd -> (pid, wire)
        self.fork_safe = True
        import logging
        root = logging.getLogger()
        # The root logger as a fresh interpreter has it; a preloaded library may configure it
        # (absl's first log call does), and then KFP's executor's own logging.basicConfig would not.
        self.fresh_logging = (list(root.handlers), root.level)

    def serve(self, preload: Sequence[str]) -> None:
        report = _preload(preload)
        # A thread started by an import would not survive a fork: then every step is exec'd.
        self.fork_safe = threading.active_count() == 1
        report["fork_safe"] = self.fork_safe
        print(f"fork server {os.getpid()}: {json.dumps(report)}", flush=True)
        self.control.send(json.dumps(report).encode())
        while True:
            wires = {wire.fileno(): pidfd for pidfd, (_, wire) in self.children.items()}
            ready, _, _ = select.select([self.control, *self.children, *wires], [], [])
            for fd in ready:
                if fd is self.control:
                    if not self._accept():
                        return self._shut_down()
                elif fd in self.children:
                    self._reap(fd)
                elif wires.get(fd) in self.children:
                    # The launcher hung up before its step ended: nobody reads the step's log.
                    self._signal(wires[fd], signal.SIGKILL)

    def _accept(self) -> bool:
        data, fds, _, _ = socket.recv_fds(self.control, 16, 2)
        if not data:
            return False
        wire_fd, log_fd = fds
        wire = socket.socket(fileno=wire_fd)
        line = wire.makefile("rb").readline()
        if not line:    # the launcher went away before sending its step
            wire.close()
            os.close(log_fd)
            return True
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._child(request, log_fd, wire)    # never returns
        os.close(log_fd)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = (pid, wire)
        wire.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        return True

    def _reap(self, pidfd: int) -> None:
        pid, wire = self.children.pop(pidfd)
        _, status, usage = os.wait4(pid, 0)
        answer = {"exit": os.waitstatus_to_exitcode(status), "max_rss_kb": usage.ru_maxrss}
        with contextlib.suppress(OSError):   # the launcher may be gone
            wire.sendall(json.dumps(answer).encode() + b"\n")
        wire.close()
        os.close(pidfd)

    def _signal(self, pidfd: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, sig)

    def _shut_down(self) -> None:
        for pidfd in list(self.children):
            self._signal(pidfd, signal.SIGKILL)
            self._reap(pidfd)
        print(f"fork server {os.getpid()}: run ended, exiting", flush=True)

    # -------------------------------------------------------------- the child
    def _child(self, request: dict, log_fd: int, wire: socket.socket) -> None:
        code = 1
        try:
            _die_with(os.getppid(), signal.SIGKILL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
            wire.close()
            self.control.close()
            for pidfd, (_, wire) in self.children.items():
                wire.close()
                os.close(pidfd)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            code = self._run(request["argv"])
        except SystemExit as stop:
            code = _exit_code(stop)
        except BaseException:  # noqa: BLE001 - what an interpreter does with an uncaught exception
            sys.excepthook(*sys.exc_info())
            code = 1
        finally:
            _finalize()
            os._exit(code)

    def _run(self, argv: list[str]) -> int:
        lightweight = lightweight_source(argv) is not None
        changed = {k for k in set(os.environ) | set(self.env) if os.environ.get(k) != self.env.get(k)}
        if not (lightweight and self.fork_safe and changed <= set(PER_STEP_ENV)):
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):   # Python ignores them; a new program must not
                signal.signal(sig, signal.SIG_DFL)
            try:
                os.execvpe(argv[0], argv, dict(os.environ))
            except OSError as err:
                print(f"kfx fork server: cannot run {argv[0]!r}: {err}", file=sys.stderr)
                return 127
        self._as_fresh_interpreter()
        program = Path(tempfile.mkdtemp()) / "ephemeral_component.py"   # as `mktemp -d`, under $TMPDIR
        program.write_text(argv[3])
        os.environ["_KFP_RUNTIME"] = "true"
        sys.argv = ["-m", "--component_module_path", str(program), *argv[4:]]
        sys.modules.pop(_EXECUTOR_MAIN, None)   # run as `-m` runs it: a fresh __main__, not the preloaded module
        runpy.run_module(_EXECUTOR_MAIN, run_name="__main__", alter_sys=True)
        return 0

    def _as_fresh_interpreter(self) -> None:
        """Process state a new `python3 -m` would not share with its siblings or the server."""
        import logging
        import random
        sys.stdout.reconfigure(line_buffering=True)   # a log that is in order and whole if killed
        sys.path[0] = os.getcwd()                      # `python3 -m` puts its cwd first
        tempfile.tempdir = None                        # $TMPDIR is the step's
        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        root = logging.getLogger()
        root.handlers[:], level = self.fresh_logging[0], self.fresh_logging[1]
        root.setLevel(level)


def _exit_code(stop: SystemExit) -> int:
    if stop.code is None or isinstance(stop.code, int):
        return stop.code or 0
    print(stop.code, file=sys.stderr)
    return 1


def _finalize() -> None:
    """What an interpreter does on its way out, short of tearing down every module: wait for
    non-daemon threads, run atexit handlers, flush."""
    import atexit
    with contextlib.suppress(BaseException):
        threading._shutdown()   # noqa: SLF001 - the call Py_FinalizeEx makes
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()   # noqa: SLF001
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()


def main(argv: list[str]) -> None:
    control_fd, parent_pid, *preload = argv
    _die_with(int(parent_pid), signal.SIGTERM)
    # Ctrl-C reaches the whole process group: the steps stop, the server stays until the runner ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _Server(socket.socket(fileno=int(control_fd))).serve(preload)
    sys.stdout.flush()
    os._exit(0)   # no module teardown: with TensorFlow loaded it takes about a second


if __name__ == "__main__":
    main(sys.argv[1:])
