#!/usr/bin/env python3
"""bench/delayrelay.py — a userspace TCP relay that adds a fixed delay each way and a link rate.

The kernel here has no netem (no ``tc qdisc ... netem``), so a slow link is simulated in user
space: every chunk read from one side is delivered to the other ``--delay`` seconds after it
would have finished arriving over a link of ``--rate-mbit`` (each direction on its own, full
duplex).  Order is kept.  For each connection it counts *turns*: client bytes delivered after
server bytes were (a client that waited for an answer before sending on), i.e. the round trips
on the connection's critical path.  Statistics go to ``--stats`` (JSON) on SIGTERM/SIGINT.

  python bench/delayrelay.py --listen 20999 --to 127.0.0.1:10143 --delay 0.05 --rate-mbit 100
"""
import argparse
import asyncio
import json
import signal


class Link:
    """One direction of one connection: serialisation at the link rate, then the delay."""

    def __init__(self, delay, rate):
        self.delay, self.rate, self.free_at = delay, rate, 0.0


async def pump(reader, writer, link, conn, side):
    loop = asyncio.get_running_loop()
    q = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await q.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            if side == "up" and conn["last"] == "down":
                conn["turns"] += 1
            conn["last"] = side
            conn[side] += len(data)
            writer.write(data)
            await writer.drain()

    task = asyncio.ensure_future(deliver())
    try:
        while True:
            data = await reader.read(1 << 18)
            now = loop.time()
            start = max(now, link.free_at)
            link.free_at = start + (len(data) / link.rate if link.rate else 0.0)
            q.put_nowait((link.free_at + link.delay, data))
            if not data:
                break
    except ConnectionError:
        q.put_nowait((0, b""))
    await task


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", type=int, required=True, help="port on 127.0.0.1")
    ap.add_argument("--to", required=True, help="HOST:PORT (loopback)")
    ap.add_argument("--delay", type=float, default=0.05, help="seconds each way (default 0.05 = 100 ms RTT)")
    ap.add_argument("--rate-mbit", type=float, default=0, help="link rate each way, Mbit/s (0: unlimited)")
    ap.add_argument("--stats", help="write per-connection statistics here (JSON) when stopped")
    a = ap.parse_args()
    host, port = a.to.rsplit(":", 1)
    rate = a.rate_mbit * 1e6 / 8
    conns = []

    async def handle(cr, cw):
        try:
            sr, sw = await asyncio.open_connection(host, int(port))
        except OSError:
            cw.close()
            return
        conn = {"up": 0, "down": 0, "turns": 0, "last": None}
        conns.append(conn)
        await asyncio.gather(pump(cr, sw, Link(a.delay, rate), conn, "up"),
                             pump(sr, cw, Link(a.delay, rate), conn, "down"), return_exceptions=True)
        for w in (sw, cw):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", a.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    if a.stats:
        with open(a.stats, "w") as f:
            json.dump({"delay_s": a.delay, "rate_mbit": a.rate_mbit,
                       "connections": [{k: c[k] for k in ("up", "down", "turns")} for c in conns]}, f)


if __name__ == "__main__":
    asyncio.run(main())
