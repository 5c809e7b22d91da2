"""Read a process tree's CPU time and memory straight from /proc.

The server under test is whatever process tree the harness launched: the
command's own PID plus every descendant (workers, supervisors, nginx workers).
Reading /proc directly keeps this exact and dependency-free.
"""

import os
import threading

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def children(pid):
    """Direct children of pid, from every thread's children list.

    A child is listed under the thread that created it, so all tasks must be
    read, not just the main one.
    """
    kids = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return kids


def tree(root_pids):
    """All live PIDs in the trees rooted at root_pids (roots included)."""
    seen = []
    stack = list(root_pids)
    while stack:
        pid = stack.pop()
        if pid in seen or not os.path.exists(f"/proc/{pid}"):
            continue
        seen.append(pid)
        stack.extend(children(pid))
    return seen


def cpu_ticks(pid):
    """(utime, stime) of one process (all its threads), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return int(fields[11]), int(fields[12])


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


class CpuSnapshot:
    """Per-PID CPU ticks of a tree at one moment, user and kernel apart."""

    def __init__(self, root_pids):
        self.ticks = {}
        for pid in tree(root_pids):
            t = cpu_ticks(pid)
            if t is not None:
                self.ticks[pid] = t

    def seconds_since(self, earlier):
        """CPU seconds (user + kernel) the tree used between `earlier` and this snapshot.

        A process born in between counts from zero. One that died in between
        is lost (its time went to a parent's cutime only once reaped), which
        is why the harness keeps servers steady during a window.
        """
        user, kernel = self.split_since(earlier)
        return user + kernel

    def split_since(self, earlier):
        """(user, kernel) CPU seconds between `earlier` and this snapshot. The kernel's
        part is mostly the sockets' work (on loopback, sending also runs the receiving
        side's TCP), plus the server's own system calls and wake-ups between its threads."""
        user = kernel = 0
        for pid, (u, k) in self.ticks.items():
            u0, k0 = earlier.ticks.get(pid, (0, 0))
            user += u - u0
            kernel += k - k0
        return user / CLOCK_TICKS, kernel / CLOCK_TICKS


def machine_busy_seconds():
    """CPU seconds all cores have spent not idle since boot (from /proc/stat).

    Compared with the server's and the load generator's own CPU over a
    window, it shows how much else was running: the noise in that sample.
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice].
    # Count user, nice, system and steal (a hypervisor taking the core is
    # noise too). Leave out irq/softirq: loopback traffic is handled there
    # and charged to no process, so it would read as noise in every sample.
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = fields[:8]
    return (user + nice + system + steal) / CLOCK_TICKS


def tree_rss(root_pids):
    """Sum of RSS over the tree, in bytes.

    Shared pages (the interpreter, copy-on-write memory) count once per
    process, as `ps` shows them: simple, and the same rule for every server.
    """
    return sum(rss_bytes(pid) for pid in tree(root_pids))


class RssSampler:
    """Samples tree RSS in a background thread and keeps the peak."""

    def __init__(self, root_pids, interval=0.2):
        self.root_pids = list(root_pids)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            self.peak = max(self.peak, tree_rss(self.root_pids))
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.root_pids))
