"""CPU and memory, of a server's processes and of the whole machine, read from /proc.

Memory is summed over processes: RSS from /proc/PID/status, PSS from /proc/PID/smaps_rollup
(which counts shared pages, such as mapped model weights, once in all). CPU is counted in clock
ticks, so that the load of everything else on a shared machine can be told from the server's.
"""

import os
import resource
import time

from .processes import tree

CLK_TCK = os.sysconf("SC_CLK_TCK")


def memory(pids):
    """(summed RSS bytes, summed PSS bytes, process count) of pids."""
    rss = pss = n = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
                        break
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                        break
            n += 1
        except (OSError, ValueError):
            continue
    return rss, pss, n


def cpu_jiffies(pids):
    """Summed utime + stime (clock ticks) of pids."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            fields = stat[stat.rfind(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return total


def machine_busy():
    """Busy clock ticks of all CPUs since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice
    return fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]


def settle(roots, limit=60.0):
    """Waits until the server's processes are idle (below 5% of a core for 300 ms)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        pids = tree(roots)
        before = cpu_jiffies(pids)
        time.sleep(0.3)
        if (cpu_jiffies(pids) - before) / CLK_TCK / 0.3 < 0.05:
            return time.monotonic() - start
    return time.monotonic() - start


class Quiet:
    """Waits, before each measured point, for the rest of the machine to be quiet.

    Other jobs share these cores. Before a point, up to `per_point` seconds are spent waiting
    until everything else (all CPU time but the server's and the harness's) uses under
    `threshold` cores over half a second, within a `budget` for the whole run. The load that
    remains is measured during the point anyway and reported.
    """

    def __init__(self, per_point, budget, threshold=0.15):
        self.per_point = per_point
        self.budget = budget
        self.threshold = threshold
        self.waited = 0.0

    def other_load(self, roots, window=0.5):
        """Cores used by everything but the server and the harness over window seconds."""
        pids = tree(roots)
        busy0, srv0 = machine_busy(), cpu_jiffies(pids)
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(window)
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        mine = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
        busy = (machine_busy() - busy0 - (cpu_jiffies(pids) - srv0)) / CLK_TCK - mine
        return max(0.0, busy) / window

    def wait(self, roots):
        """Seconds waited; the other load last seen."""
        start = time.monotonic()
        load = self.other_load(roots)
        while (
            load >= self.threshold
            and time.monotonic() - start < self.per_point
            and self.waited + (time.monotonic() - start) < self.budget
        ):
            load = self.other_load(roots)
        waited = time.monotonic() - start
        self.waited += waited
        return waited, load
