"""A warm interpreter for the tests' command-line runs: ``python -m hovit_nas ARGS``, minus the
imports.

Most end-to-end tests run the real console entry point in a subprocess, so that they see exit
codes and stderr as a user does. Every such process used to import torch, timm, scikit-learn and
onnx again: about 6-8 CPU-seconds on the 2-core CI machine, several hundred times per suite.
This server imports those third-party libraries once (never ``hovit_nas`` itself, so every run
imports this checkout's code fresh). For each run, it forks a process that:

- takes the client's stdin, stdout and stderr (passed over a Unix socket, SCM_RIGHTS);
- takes the client's working directory, environment and arguments;
- runs ``hovit_nas`` as ``python -m hovit_nas`` would (runpy, ``sys.path[0]`` the working
  directory).

The exit status is passed back: a code, or the signal that killed it. The client
(``python forkserver.py module|script SOCKET ARGS...``) is a small stdlib-only process. It forwards SIGINT
and SIGTERM to the run, and exits with the run's own code or signal. So ``subprocess.run`` (with
timeouts), ``bash -c`` and exit-code checks behave as with a fresh interpreter. A client that is
killed takes its run's process group with it.

The run's ``PYTHONPATH`` goes after ``sys.path[0]``, where a fresh interpreter puts it.
What differs from a fresh interpreter, by construction: libraries that read an environment
variable at import read the server's. The server sets ``OPENBLAS_NUM_THREADS=1`` so that it holds
no BLAS threads when it forks; hovit-nas sets torch's threads itself. Tests that need a truly
fresh process (killing drivers, Ray clusters, the wheel, the GPU check) start one as before.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys

PRELOAD = ("numpy", "torch", "torchvision", "timm", "scipy.stats", "sklearn.metrics", "sklearn.datasets", "onnx", "optuna",
           "safetensors.torch", "yaml", "click", "PIL.Image", "sqlalchemy", "peft")


def _send(conn: socket.socket, obj: dict) -> None:
    data = json.dumps(obj).encode()
    conn.sendall(struct.pack("!I", len(data)) + data)


def _recv(conn: socket.socket) -> dict | None:
    head = b""
    while len(head) < 4:
        chunk = conn.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (n,) = struct.unpack("!I", head)
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return json.loads(data)


# ------------------------------------------------------------------------------------- server
def serve(path: str) -> None:
    import importlib

    for m in PRELOAD:
        importlib.import_module(m)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path + ".tmp")
    os.rename(path + ".tmp", path)  # the socket appears only once the server is ready
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        while True:  # reap finished handlers
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if os.fork() == 0:
            srv.close()
            try:
                _handle(conn)
            finally:
                os._exit(0)
        conn.close()


def _handle(conn: socket.socket) -> None:
    """One run: fork the command, tell the client its pid, then its exit status; kill its process
    group if the client goes away first."""
    _, fds, _, _ = socket.recv_fds(conn, 1, 3)
    req = _recv(conn)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _child(req, fds)
    for fd in fds:
        os.close(fd)
    _send(conn, {"pid": pid})
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            _send(conn, {"status": status})
            return
        readable, _, _ = select.select([conn], [], [], 0.05)
        if readable and not conn.recv(1, socket.MSG_PEEK):  # the client is gone
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return


def _child(req: dict, fds: list[int]) -> None:
    import atexit
    import io
    import runpy
    import threading
    import traceback

    code = 1
    try:
        os.setpgid(0, 0)
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True,
                                      write_through=unbuffered)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, write_through=True)
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
        # `python -m` puts the working directory first; the test's `hovit-nas` shim, this checkout
        sys.path[0] = req["cwd"] if req["as"] == "module" else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        # then the run's PYTHONPATH, as a fresh interpreter would read it (e.g. tests/ for a plugin)
        sys.path[1:1] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
        import numpy as np

        np.random.seed()  # a fresh interpreter's global numpy state is drawn from the OS, not shared
        sys.argv = ["-m" if req["as"] == "module" else "hovit-nas", *req["argv"]]
        try:
            if req["as"] == "module":
                runpy.run_module("hovit_nas", run_name="__main__", alter_sys=True)
            else:
                from hovit_nas.cli import main

                main(prog_name="hovit-nas")
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:  # as the interpreter would: the traceback, exit status 1
            traceback.print_exc()
            code = 1
        threading._shutdown()  # wait for non-daemon threads, as interpreter shutdown does
        atexit._run_exitfuncs()
    finally:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:
                pass
        os._exit(code)


# ------------------------------------------------------------------------------------- client
def run(path: str, argv: list[str], as_: str) -> None:
    """``as_``: "module" (``python -m hovit_nas``) or "script" (the installed ``hovit-nas``)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    socket.send_fds(conn, [b"x"], [0, 1, 2])
    _send(conn, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "as": as_})
    msg = _recv(conn)
    if msg is None:
        sys.exit("forkserver: the server closed the connection")
    pid = msg["pid"]

    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    msg = _recv(conn)
    status = msg["status"] if msg else 1 << 8
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    sys.exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif sys.argv[1] in ("module", "script"):
        run(sys.argv[2], sys.argv[3:], sys.argv[1])
    else:
        sys.exit(f"usage: {sys.argv[0]} serve SOCKET | module SOCKET ARGS... | script SOCKET ARGS...")
