#!/usr/bin/env python3
"""bench/memtrace.py — where a ``mailsyncctl`` run's Python memory is at its peak (tracemalloc).

Runs ``mailsyncd.cli.ctl`` in this process with tracemalloc on; a thread snapshots the traced
allocations whenever their total reaches a new high (>= 10 % above the last snapshot), and at the
end the top allocation sites of the highest snapshot are printed (grouped by line, and by file).
tracemalloc slows the run down and sees Python allocations only (not SQLite's page cache or
OpenSSL's buffers): compare its peak with the process's VmHWM, printed too.

  .venv/bin/python bench/memtrace.py [--top 25] -- --config CFG sync ADDRESS --add --password-file F --progress none
"""
import argparse
import os
import sys
import threading
import time
import tracemalloc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--frames", type=int, default=1, help="traceback depth kept per allocation")
    ap.add_argument("ctl", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    args = a.ctl[1:] if a.ctl[:1] == ["--"] else a.ctl
    tracemalloc.start(a.frames)
    best = {"size": 0, "snap": None, "t": 0.0}
    stop = threading.Event()
    t0 = time.monotonic()

    def watch():
        while not stop.wait(0.25):
            cur, _ = tracemalloc.get_traced_memory()
            if cur > best["size"] * 1.1:
                best.update(size=cur, snap=tracemalloc.take_snapshot(), t=time.monotonic() - t0)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    from mailsyncd.cli import ctl
    try:
        rc = ctl.main(args)
    except SystemExit as e:
        rc = e.code
    stop.set()
    th.join()
    _, peak = tracemalloc.get_traced_memory()
    with open("/proc/self/status") as f:
        hwm = next((ln.split()[1] for ln in f if ln.startswith("VmHWM:")), "?")
    print(f"\nmemtrace: rc={rc} traced peak {peak / 2**20:.1f} MiB; VmHWM {int(hwm) / 1024:.1f} MiB; "
          f"snapshot at {best['t']:.1f} s with {best['size'] / 2**20:.1f} MiB traced", file=sys.stderr)
    if best["snap"] is None:
        return
    snap = best["snap"].filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    for key in ("lineno", "filename"):
        print(f"\ntop {a.top} by {key}:", file=sys.stderr)
        for st in snap.statistics(key)[:a.top]:
            print(f"  {st.size / 2**20:8.2f} MiB {st.count:8d} blocks  {st.traceback}", file=sys.stderr)


if __name__ == "__main__":
    main()
