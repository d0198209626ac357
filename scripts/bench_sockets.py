#!/usr/bin/env python3
"""Many idle WebSockets against one `faro` process: resident memory per
connection, and how long one event takes to reach every one of them.

Run through scripts/bench-sockets, which builds and starts `faro dev`.
Clients are spread over several processes (one Python process is itself the
bottleneck for receiving thousands of frames); their clocks are the same host's.
"""
import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import time
import urllib.request

import websockets

APP_SECRET = b"demo-app-secret"  # faro dev's public demo secret
PHONE_NUMBER_ID = "100000000000001"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def client(url, token, n, opened, go, results):
    async def run():
        socks = []
        for _ in range(n):
            socks.append(
                await websockets.connect(
                    url,
                    additional_headers={"Authorization": f"Bearer {token}"},
                    max_queue=None,
                    ping_interval=None,
                    open_timeout=60,
                )
            )
        opened.release()
        got = []

        async def one(ws):
            await ws.recv()
            got.append(time.time())

        await asyncio.gather(*(one(ws) for ws in socks))
        results.put(got)
        for ws in socks:
            await ws.close()

    asyncio.run(run())


def webhook(now: int) -> bytes:
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550000000", "phone_number_id": PHONE_NUMBER_ID},
                "contacts": [{"profile": {"name": "Bench"}, "wa_id": "15550009999"}],
                "messages": [{"from": "15550009999", "id": f"wamid.BENCH{now}{os.getpid()}",
                              "timestamp": str(now), "type": "text", "text": {"body": "bench"}}],
            }}]}],
        }
    ).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edge", default="127.0.0.1:8080")
    ap.add_argument("--token", required=True)
    ap.add_argument("--pid", type=int, required=True, help="the faro process")
    ap.add_argument("--sockets", type=int, default=10_000)
    ap.add_argument("--procs", type=int, default=4)
    args = ap.parse_args()

    url = f"ws://{args.edge}/api/v1/messages/stream"
    before = rss_kib(args.pid)
    opened, results = mp.Semaphore(0), mp.Queue()
    per = args.sockets // args.procs
    started = time.time()
    procs = [
        mp.Process(target=client, args=(url, args.token, per, opened, None, results))
        for _ in range(args.procs)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        opened.acquire()
    total = per * args.procs
    time.sleep(2)  # let allocations settle
    after = rss_kib(args.pid)
    print(f"{total} sockets open in {time.time() - started:.1f} s")
    print(f"faro RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB: "
          f"{(after - before) / total:.2f} KiB per socket")

    body = webhook(int(time.time()))
    sig = "sha256=" + hmac.new(APP_SECRET, body, hashlib.sha256).hexdigest()
    req = urllib.request.Request(
        f"http://{args.edge}/api/v1/webhooks/whatsapp", data=body, method="POST",
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sig})
    t0 = time.time()
    with urllib.request.urlopen(req) as r:
        assert r.status == 200, r.status
    times = []
    for _ in procs:
        times.extend(results.get(timeout=120))
    for p in procs:
        p.join()
    lat = sorted(t - t0 for t in times)
    print(f"one webhook -> {len(lat)} sockets: first {lat[0] * 1000:.0f} ms, "
          f"p50 {lat[len(lat) // 2] * 1000:.0f} ms, last {lat[-1] * 1000:.0f} ms "
          f"({len(lat) / (lat[-1] - lat[0] + 1e-9):.0f} deliveries/s after the first)")


if __name__ == "__main__":
    main()
