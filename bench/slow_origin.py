#!/usr/bin/env python3
"""A slow (or never-answering) HTTP/1.1 origin for the shadow benchmarks of bench/run.sh.

nginx cannot sleep, so the "slow candidate" scenarios use this: asyncio only, no third-party
module, keep-alive, GET/HEAD. It answers like the benchmark's nginx origins (same bodies and the
same comparable headers, so strangler's comparisons match), only later:

    python3 slow_origin.py --port 18082 --delay 1        # every answer after 1 s
    python3 slow_origin.py --port 18083 --delay never    # reads requests, never answers

`/` gets the 100-byte body of conf/nginx-backend.conf (text/plain); `/big` 16384 bytes of 'b'
(application/octet-stream, with the Last-Modified / ETag / Accept-Ranges nginx sends for
www/big.bin, whose mtime run.sh pins to --mtime); anything else 404. Stops on SIGTERM/SIGINT.
"""
import argparse
import asyncio
import signal
from email.utils import formatdate

SMALL = (b"bench-backend-ok " + b"x" * 82 + b"\n")
BIG = b"b" * 16384
assert len(SMALL) == 100


def responses(mtime):
    last_modified = formatdate(mtime, usegmt=True)
    etag = f'"{mtime:x}-{len(BIG):x}"'

    def build(status, headers, body):
        head = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers]
        head += [f"Content-Length: {len(body)}", "Connection: keep-alive", "", ""]
        return "\r\n".join(head).encode(), body

    return {
        "/": build("200 OK", [("Content-Type", "text/plain")], SMALL),
        "/big": build("200 OK", [("Content-Type", "application/octet-stream"),
                                 ("Last-Modified", last_modified), ("ETag", etag),
                                 ("Accept-Ranges", "bytes")], BIG),
        None: build("404 Not Found", [("Content-Type", "text/plain")], b"not found\n"),
    }


async def serve_conn(reader, writer, delay, table):
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                return
            method, target = parts[0], parts[1]
            length = 0
            close = parts[2] == "HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip() or 0)
                elif name == "connection":
                    close = close or "close" in value.lower()
            if length:
                await reader.readexactly(length)
            if delay is None:
                await asyncio.Event().wait()  # never answers; the peer gives up
            await asyncio.sleep(delay)
            head_bytes, body = table.get(target.split("?", 1)[0], table[None])
            writer.write(head_bytes if method == "HEAD" else head_bytes + body)
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay", default="1", help="seconds before answering, or 'never'")
    ap.add_argument("--mtime", type=int, default=1767225600, help="mtime of nginx's big.bin")
    args = ap.parse_args()
    delay = None if args.delay == "never" else float(args.delay)
    table = responses(args.mtime)
    server = await asyncio.start_server(
        lambda r, w: serve_conn(r, w, delay, table), args.host, args.port, backlog=4096,
        reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()  # open connections are cancelled when asyncio.run returns


if __name__ == "__main__":
    asyncio.run(main())
