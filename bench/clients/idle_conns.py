"""Open many keep-alive HTTP connections, use each once, then hold them idle.

Protocol with the harness (stdout/stdin, one line each):
  1. once every connection has sent one GET and read its full response,
     print  READY {"established": N, "failed": F, "seconds": S}
  2. wait for any line on stdin (the harness measures memory meanwhile),
  3. print  DONE {"still_open": K}  (connections the server has not closed),
     close everything and exit.
"""

import argparse
import asyncio
import json
import resource
import sys
import time


def raise_fd_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(wanted, soft)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def read_response(reader):
    """Read one HTTP/1.1 response with a Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def open_one(host, port, path, gate, timeout, conns):
    async with gate:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        try:
            status = await asyncio.wait_for(read_response(reader), timeout)
        except BaseException:
            writer.close()
            raise
        if status != 200:
            writer.close()
            raise RuntimeError(f"status {status}")
        conns.append((reader, writer))


async def main(args):
    limit = raise_fd_limit(args.count + 100)
    if limit < args.count + 50:
        print(f"fd limit {limit} is too low for {args.count} connections", file=sys.stderr)
        return 2
    # Bound the connects in flight so the server's listen backlog never overflows.
    gate = asyncio.Semaphore(args.concurrency)
    conns = []
    started = time.monotonic()
    tasks = [asyncio.ensure_future(open_one(args.host, args.port, args.path, gate, args.timeout, conns))
             for _ in range(args.count)]
    # A server that stops serving new connections past some limit would
    # otherwise keep us waiting for every remaining timeout: give up at the
    # deadline and report how many we got.
    done, pending = await asyncio.wait(tasks, timeout=args.deadline)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    errors = [t.exception() for t in done if t.exception() is not None]
    report = {"established": len(conns), "failed": args.count - len(conns),
              "seconds": round(time.monotonic() - started, 3)}
    if errors:
        report["first_error"] = repr(errors[0])
    elif pending:
        report["first_error"] = f"{len(pending)} connection(s) not served within {args.deadline:g} s"
    print("READY " + json.dumps(report), flush=True)

    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    # The transport feeds EOF into the reader as soon as the server closes,
    # even with no read pending; the responses were consumed, so at_eof()
    # is True exactly for connections the server dropped.
    still_open = sum(1 for reader, _ in conns if not reader.at_eof())
    print("DONE " + json.dumps({"still_open": still_open}), flush=True)
    for _, writer in conns:
        writer.close()
    return 0


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--timeout", type=float, default=10.0, help="per connect and per response")
    p.add_argument("--deadline", type=float, default=60.0, help="for all the connections together")
    return p.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
