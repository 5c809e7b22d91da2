"""WebSocket echo load: C connections, each sending a small message and
waiting for its echo, back to back, for a fixed time.

Prints one line: RESULT {"messages": N, "seconds": S, "p50_us": ..., ...}
or exits with code 3 and an ERROR line if no connection could be made (the
server does not speak WebSocket), so the harness can report "n/a".

Compression is off: permessage-deflate is negotiated only if the client
offers it, and leaving it out keeps every server on the same plain frames.
"""

import argparse
import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect


async def echo_loop(url, message, stop_at, latencies, failures):
    try:
        async with connect(url, compression=None, proxy=None, open_timeout=10, max_queue=None) as ws:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                await ws.send(message)
                reply = await ws.recv()
                latencies.append(time.perf_counter() - t0)
                if reply != message:
                    failures.append("echo mismatch")
                    return
    except Exception as exc:  # a refused upgrade, a reset: count it, report it
        failures.append(f"{type(exc).__name__}: {exc}")


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, int(round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


async def main(args):
    message = "x" * args.size
    latencies, failures = [], []
    started = time.perf_counter()
    stop_at = started + args.duration
    await asyncio.gather(*(echo_loop(args.url, message, stop_at, latencies, failures)
                           for _ in range(args.connections)))
    elapsed = time.perf_counter() - started
    if not latencies:
        print("ERROR " + json.dumps({"error": failures[0] if failures else "no messages"}), flush=True)
        return 3
    latencies.sort()
    print("RESULT " + json.dumps({
        "messages": len(latencies),
        "seconds": round(elapsed, 4),
        "errors": len(failures),
        "first_error": failures[0] if failures else None,
        "p50_us": round(percentile(latencies, 50) * 1e6, 1),
        "p99_us": round(percentile(latencies, 99) * 1e6, 1),
    }), flush=True)
    return 0


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--size", type=int, default=32, help="message size in bytes")
    return p.parse_args()


if __name__ == "__main__":
    try:
        # The client is often the bottleneck on 2 cores: make it cheap.
        from uvloop import run
    except ImportError:
        run = asyncio.run
    sys.exit(run(main(parse_args())))
