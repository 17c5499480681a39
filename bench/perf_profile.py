#!/usr/bin/env python3
"""Where a worker's CPU time goes under load: `perf record` of the worker while oha drives it.

Run it through `scripts/bench --profile`, which sets up oha, perf and the release build first.
For each point (photo, clients) it starts Arbiter with the benchmark's config (as bench/harness
does), warms it up, drives it with oha and meanwhile samples the worker process with
`perf record -g`, then summarizes from `perf report`:

- the share of the worker's CPU samples per thread kind and library (`--sort comm,dso`);
- the hottest functions of Arbiter's own code;
- ONNX Runtime's library has no symbols, so its samples are reported in all, and those on the
  instruction right after a `pause` (the thread pool spinning while it waits for work, found by
  disassembling the hottest addresses) apart.

It writes profile.md (and the perf.data files) in --out.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness.common import PROBE_PHOTO, ROOT, say
from harness.lifecycle import time_to_first_200
from harness.load import run_oha
from harness.machine import machine
from harness.processes import cleanup
from harness.servers import Arbiter
from harness.usage import settle

ORT_DSO = "libonnxruntime.so"


def perf_report(data: Path, *args: str) -> list[str]:
    """`perf report --stdio` lines with a percentage, comments dropped."""
    out = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--no-children", "-g", "none", *args],
        capture_output=True, text=True, check=False,
    ).stdout
    return [line for line in out.splitlines() if "%" in line and not line.lstrip().startswith("#")]


def by_thread_and_library(data: Path) -> list[tuple[float, str, str]]:
    """[(percent, thread name, library)], largest first."""
    rows = []
    for line in perf_report(data, "--sort", "comm,dso"):
        parts = line.split()
        if len(parts) >= 3:
            rows.append((float(parts[0].rstrip("%")), parts[1], parts[2]))
    return rows


def hottest_symbols(data: Path, dso_names: list[str], limit: int) -> list[tuple[float, str, str]]:
    """[(percent, library, function)] for the named libraries."""
    rows = []
    for dso in dso_names:
        for line in perf_report(data, "--sort", "sym", "--dsos", dso):
            m = re.match(r"\s*([\d.]+)%\s+\[\.\]\s+(.+?)\s*$", line)
            if m:
                rows.append((float(m.group(1)), dso, m.group(2)))
    return sorted(rows, reverse=True)[:limit]


def ort_addresses(data: Path, library: str) -> list[tuple[float, int]]:
    """[(percent, address)] of ONNX Runtime's samples (no symbols: raw addresses)."""
    rows = []
    for line in perf_report(data, "--sort", "sym", "--dsos", library):
        m = re.match(r"\s*([\d.]+)%\s+\[\.\]\s+0x([0-9a-f]+)", line)
        if m:
            rows.append((float(m.group(1)), int(m.group(2), 16)))
    return rows


def after_pause(library_path: Path, address: int) -> bool:
    """Whether the instruction just before `address` is `pause` (a spin-wait loop)."""
    out = subprocess.run(
        ["objdump", "-d", f"--start-address={address - 16:#x}", f"--stop-address={address + 1:#x}",
         str(library_path)],
        capture_output=True, text=True, check=False,
    ).stdout
    lines = [line for line in out.splitlines() if re.match(r"\s*[0-9a-f]+:\s", line)]
    for prev, line in zip(lines, lines[1:]):
        if int(line.split(":")[0], 16) == address:
            return "pause" in prev
    return False


def profile_point(binary, base, out_dir, cores, photo, clients, seconds, oha):
    """One point: start, warm up, drive and record; returns the summary dict."""
    server = Arbiter(binary, base, out_dir, cores)
    tag = f"{photo.split('.')[0]}-c{clients}"
    data = out_dir / f"perf-{tag}.data"
    try:
        if time_to_first_200(server, server.port, limit=120.0) is None:
            raise RuntimeError("Arbiter gave no 200 after its start; see its log in " + str(server.dir))
        run_oha(oha, server.port, PROBE_PHOTO, 2, 3.0, server.roots(), out_dir / "warmup.json")
        settle(server.roots())
        worker = server.worker_pids()[0]
        # perf starts a second into the load and stops a second before its end.
        record = None

        def start_perf():
            nonlocal record
            time.sleep(1.0)
            record = subprocess.Popen(
                ["perf", "record", "-F", "499", "-g", "-p", str(worker), "-o", str(data), "--",
                 "sleep", str(seconds)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )

        starter = threading.Thread(target=start_perf)
        starter.start()
        run = run_oha(
            oha, server.port, photo, clients, seconds + 2.0, server.roots(), out_dir / f"oha-{tag}.json"
        )
        starter.join()
        _, err = record.communicate(timeout=seconds + 60)
        if record.returncode != 0 or not data.exists():
            raise RuntimeError(f"perf record failed: {err.decode(errors='replace')[-500:]}")
    finally:
        server.stop()
    library = next(
        (p for p in (ROOT / "var" / "onnxruntime").glob(f"{ORT_DSO}*") if p.is_file()), None
    )
    ort_name = library.name if library else ORT_DSO
    addresses = ort_addresses(data, ort_name)
    spin = sum(pct for pct, addr in addresses[:40] if library and after_pause(library, addr))
    return {
        "photo": photo,
        "clients": clients,
        "rps": run["rps"],
        "threads": by_thread_and_library(data),
        "ort_total": sum(pct for pct, _ in addresses),
        "ort_spin": spin,
        # The binary runs as the copy the harness made; libjpeg-turbo has no symbols.
        "own": [r for r in hottest_symbols(data, ["arbiter.bin"], 40) if not r[2].startswith("0x")][:12],
        "data": data.name,
    }


def markdown(points, meta) -> str:
    """The report."""
    lines = [
        "# Where a worker's time goes",
        "",
        f"Generated by `scripts/bench --profile` on {meta['when']}, at `{meta['commit']}`, on "
        f"{meta['cpu']} ({meta['cores']} cores). Arbiter runs `etc/arbiter.toml` as shipped (as in "
        "the benchmark, `arbiter.bin` being its copy of the binary); oha drives it for "
        f"{meta['seconds']:g} s per point while `perf record -F 499 -g -p WORKER` samples the "
        "worker process (all its threads). Percentages are of the worker's samples. Other jobs may "
        "share these cores: compare shares within one point.",
        "",
        "Thread names: `inference` is the first inference thread and ONNX Runtime's pool threads "
        "(they inherit its name), `inference-N` the other lanes (one single-thread session each, "
        "under load), `decode` the decode/resize pool (`decode-N` for a model at `nice = N`; "
        "`worker-blocking` before `model.nice`), `arbiter` the HTTP event loop.",
        "",
    ]
    for p in points:
        lines += [
            f"## {p['photo']}, {p['clients']} client(s): {p['rps']:.1f} requests/s",
            "",
            "| share of samples | thread | library |",
            "|---|---|---|",
        ]
        lines += [f"| {pct:.1f}% | {comm} | {dso} |" for pct, comm, dso in p["threads"] if pct >= 0.1]
        lines += [
            "",
            f"ONNX Runtime's code: {p['ort_total']:.1f}% of the samples, of which "
            f"{p['ort_spin']:.1f}% on the instruction after a `pause` (its thread pool spinning "
            "while it waits for work; the rest is mostly its convolution kernels).",
            "",
            "Hottest functions of Arbiter's own code (libjpeg-turbo's are not named: it has no "
            "symbols; its share is in the table above):",
            "",
            "| share of samples | library | function |",
            "|---|---|---|",
        ]
        lines += [f"| {pct:.2f}% | {dso} | `{sym}` |" for pct, dso, sym in p["own"]]
        lines += ["", f"Raw samples: `{p['data']}` in the run folder (`perf report -i FILE`).", ""]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arbiter", required=True, help="the arbiter binary")
    ap.add_argument("--oha", required=True, help="the oha binary")
    ap.add_argument("--config", default=str(ROOT / "etc" / "arbiter.toml"))
    ap.add_argument("--out", required=True, help="run folder: profile.md and the perf.data files")
    ap.add_argument("--points", default="grace_hopper.jpg:8,big_12mp.jpg:8,grace_hopper.jpg:1",
                    help="comma-separated PHOTO:CLIENTS")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    base = (args.config, Path(args.config).read_text())
    binary = out / "arbiter.bin"
    shutil.copy2(args.arbiter, binary)
    points = []
    try:
        for item in args.points.split(","):
            photo, clients = item.rsplit(":", 1)
            say(f"== profiling {photo} at {clients} client(s) for {args.seconds:g} s")
            p = profile_point(binary, base, out, cores, photo, int(clients), args.seconds, args.oha)
            say(
                f"{p['rps']:.1f} req/s; ONNX Runtime {p['ort_total']:.1f}% of the worker's samples "
                f"(spinning {p['ort_spin']:.1f}%)"
            )
            points.append(p)
    finally:
        cleanup()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    mach = machine()
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit or "?",
        "cpu": f"{mach.get('cpu_model', '?')} ({'AVX-512' if mach.get('avx512') else 'no AVX-512'})",
        "cores": cores,
        "seconds": args.seconds,
    }
    (out / "profile.md").write_text(markdown(points, meta))
    say(f"report: {out / 'profile.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
