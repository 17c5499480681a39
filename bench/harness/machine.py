"""The machine and the versions of what is compared, recorded in results.json's meta."""

import os
import platform
import subprocess
import sys
from pathlib import Path

from .common import ROOT


def machine():
    """The machine, described."""
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    flags = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = line
                break
    mem_total = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "avx512": " avx512f" in flags,
        "memory_bytes": mem_total,
        "os": os_name,
        "kernel": platform.release(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def versions(binary, oha):
    """Versions of what is compared."""

    def first_line(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=10, check=False)
            return (p.stdout or p.stderr).decode(errors="replace").strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "unknown"

    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True, timeout=10, check=False,
        ).stdout.decode().strip()
    except OSError:
        commit = "unknown"
    import onnxruntime  # the peer venv's, also used by the ceiling

    return {
        "arbiter": first_line([str(binary), "--version"]),
        "git": commit,
        "oha": first_line([str(oha), "--version"]),
        "nginx": first_line(["nginx", "-v"]),
        "python": platform.python_version(),
        "onnxruntime_python": onnxruntime.__version__,
        "gunicorn": first_line([sys.executable, "-m", "gunicorn", "--version"]),
    }
