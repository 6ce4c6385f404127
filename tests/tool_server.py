"""A process that has imported the tools' libraries once and runs each tool as a fork of itself.

The suite runs the command-line tools as a user does (``python tools/train.py ...``; see
``tests/test_tools/helpers.py``'s ``run_tool``). Each such process spent ~6-8 s of a 2-core
machine importing torch, mmengine, mmcv, mmdet and mmsegmentation before it parsed its first
argument -- most of a usage-error test, and minutes of the whole suite. This server imports
them once; a request forks it, and the child becomes the tool's process: its own pid, working
directory, environment, ``sys.argv``, ``sys.path`` (the script's folder first, as Python puts
it), standard streams on the caller's files, fresh random states, and an ordinary interpreter
exit (its exit status, ``atexit`` handlers, uncaught exceptions printed). What it does not
import is this package or Triton: both read their environment when imported
(``TRITON_INTERPRET``, ``MUX_BACKBONES_*``), so each child imports them under its own.

Environment variables the preloaded libraries read when imported (``OMP_NUM_THREADS``,
``TORCH_*``, ...) cannot differ from the server's: :func:`served_env` says which requests it can
serve. Another request replaces the server by one started in its environment (the suite's
environment drifts now and then: ``PATH`` once the C++ kernels' build puts ninja on it).

Protocol (one request at a time, JSON lines): the caller writes ``{"argv", "cwd", "env",
"stdout", "stderr"}`` on the server's stdin; the server answers ``{"pid"}`` once the child runs,
then ``{"returncode"}`` (``subprocess``'s convention: minus the signal that ended it).
"""
import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

# What a tool process would import before its own code; nothing that reads the variables a
# request may set (see served_env).
PRELOAD = ('numpy', 'cv2', 'torch', 'torch.nn', 'torchvision', 'mmengine', 'mmengine.runner',
           'mmcv', 'mmcv.ops', 'mmcv.transforms', 'mmdet.models', 'mmdet.datasets',
           'mmdet.engine', 'mmdet.evaluation', 'mmdet.apis', 'mmseg.models', 'mmseg.datasets',
           'mmseg.engine', 'mmseg.evaluation', 'mmseg.apis', 'pycocotools.coco')
# Variables a request may set to its own value: none of them is read by a preloaded import.
REQUEST_VARIABLES = ('PYTHONPATH', 'TRITON_INTERPRET', 'PYTEST_CURRENT_TEST')
REQUEST_PREFIXES = ('MUX_BACKBONES_', )


def served_env(server_env: dict, env: dict, set_by_imports=()) -> bool:
    """Whether a tool run in ``env`` may fork from a server started in ``server_env`` whose
    imports set the variables ``set_by_imports`` themselves (as the tool's imports would)."""
    for key in set(server_env) | set(env):
        if server_env.get(key) != env.get(key) and key not in REQUEST_VARIABLES and \
                key not in set_by_imports and not key.startswith(REQUEST_PREFIXES):
            return False
    return True


def _read_text(path: str) -> str:
    with open(path, errors='replace') as f:
        return f.read()


def _answer(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + '\n')
    sys.stdout.flush()  # (nothing buffered may reach a child)


def _serve():
    """Answer requests until stdin closes; in a forked child, return its request."""
    import importlib
    before = dict(os.environ)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional piece (e.g. mmcv without its ops): the tool imports
            pass
    base_path = [p for p in sys.path[1:] if p not in os.environ.get('PYTHONPATH', '').split(
        os.pathsep)]
    # (e.g. TOKENIZERS_PARALLELISM, which an import of mmseg's sets)
    set_by_imports = sorted(k for k in set(before) | set(os.environ)
                            if before.get(k) != os.environ.get(k))
    _answer({'ready': os.getpid(), 'set_by_imports': set_by_imports})
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            return request, base_path
        _answer({'pid': pid})
        _, status = os.waitpid(pid, 0)
        _answer({'returncode': os.waitstatus_to_exitcode(status)})
    sys.exit(0)


def _become_tool(request: dict, base_path: list) -> None:
    """Turn this forked child into ``python argv...`` as the request describes, and run it."""
    import random
    import runpy

    import numpy as np
    import torch

    os.setsid()  # (a group of its own: the caller's timeout ends the tool and its children)
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                            (1, request['stdout'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, request['stderr'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(os.devnull)
    script = request['argv'][0]
    sys.argv = list(request['argv'])
    extra = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    sys.path[:] = [os.path.dirname(os.path.abspath(script))] + extra + base_path
    # A fresh process's random states: forks would otherwise share the server's.
    random.seed()
    np.random.seed()
    torch.seed()  # (a fresh process's generator starts from a random seed too)
    runpy.run_path(script, run_name='__main__')


class ToolServer:
    """The caller's side: :meth:`run` is ``subprocess.run([sys.executable, *argv],
    capture_output=True, text=True)`` through a server started on first use (one per process,
    so per xdist worker) in that run's environment; ``MUX_TESTS_TOOL_SERVER=0``, or a server
    that cannot start, makes every run a plain subprocess. (The server's own working
    directory does not matter: each child changes to its run's.)
    """

    def __init__(self):
        self.env = None
        self._proc, self._pending, self._unusable = None, b'', False
        self._set_by_imports = ()
        atexit.register(self.close)

    def _start(self, deadline: float) -> bool:
        self._proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)], env=self.env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        ready = self._read(deadline)
        if ready is None:
            return False
        self._set_by_imports = tuple(ready['set_by_imports'])
        return True

    def _read(self, deadline: float):
        """The server's next answer; None if it died or ``deadline`` passed first."""
        if self._proc is None:
            return None
        while b'\n' not in self._pending:
            ready, _, _ = select.select([self._proc.stdout], [], [],
                                        max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._proc.stdout.fileno(), 65536) if ready else b''
            if not chunk:
                return None
            self._pending += chunk
        line, self._pending = self._pending.split(b'\n', 1)
        return json.loads(line)

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc, self._pending = None, b''

    def run(self, argv, env: dict, cwd: str, timeout: float) -> subprocess.CompletedProcess:
        args = [sys.executable, *argv]
        if self._unusable or os.environ.get('MUX_TESTS_TOOL_SERVER') == '0':
            return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        if self._proc is not None and (self._proc.poll() is not None or
                                       not served_env(self.env, env, self._set_by_imports)):
            self.close()
        if self._proc is None:
            self.env = dict(env)
            if not self._start(time.monotonic() + 600):
                self.close()
                self._unusable = True  # (plain subprocesses, as before the server)
                return self.run(argv, env, cwd, timeout)
        with tempfile.TemporaryDirectory(prefix='tool_run_') as tmp:
            out, err = os.path.join(tmp, 'stdout'), os.path.join(tmp, 'stderr')
            self._proc.stdin.write((json.dumps(dict(
                argv=list(argv), cwd=cwd, env=env, stdout=out, stderr=err)) + '\n').encode())
            deadline = time.monotonic() + timeout
            started = self._read(deadline)
            if started is None:  # the server died: plain subprocesses from here on
                self.close()
                self._unusable = True
                return self.run(argv, env, cwd, timeout)
            answer = self._read(deadline)
            timed_out = answer is None and self._proc.poll() is None
            if timed_out:  # end the tool's process group, as subprocess.run ends its child
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(started['pid'], signal.SIGKILL)
                self._read(time.monotonic() + 60)
            elif answer is None:
                self.close()
                raise RuntimeError(f'the tool server died while running {argv}')
            stdout, stderr = _read_text(out), _read_text(err)
        if timed_out:  # (bytes, as subprocess.run gives them with a timeout even in text mode)
            raise subprocess.TimeoutExpired(args, timeout, stdout.encode(), stderr.encode())
        return subprocess.CompletedProcess(args, answer['returncode'], stdout, stderr)


if __name__ == '__main__':
    # Only a child returns from _serve; it then exits as the tool's own interpreter would.
    _become_tool(*_serve())
