"""Processes the harness starts and stops, and the trees they grow.

Every process is started in its own session, so that its whole tree (a server's workers
included) can be stopped through its pid, and is recorded so that cleanup() stops whatever is
left at the end of a run, whatever happens.
"""

import os
import signal
import subprocess
from pathlib import Path


STARTED = []  # every Popen the harness started, stopped in cleanup()


def spawn(cmd, logfile, env=None, cwd=None):
    """Starts cmd in its own session (so its whole tree can be stopped by its pid)."""
    out = open(logfile, "ab")
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    out.close()
    STARTED.append(proc)
    return proc


def stop(proc, sig=signal.SIGTERM, grace=20.0):
    """Stops a started process: sig to its pid, then SIGKILL to its process group."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left of its group (workers whose parent died first).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    if proc in STARTED:
        STARTED.remove(proc)


def cleanup():
    """Stops every process the harness started, last started first."""
    for proc in list(reversed(STARTED)):
        stop(proc, signal.SIGTERM, grace=5.0)


def children_map():
    """ppid -> [pid] for every process on the machine."""
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(roots):
    """The live pids of roots and all their descendants."""
    kids = children_map()
    out, todo = [], [p for p in roots if Path(f"/proc/{p}").exists()]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out
