"""The load generator: Slack-signed requests from a process of its own, timed one by one.

It is a separate process so that its own work (building, signing, reading answers, its
garbage collector) is not counted as the server's: the client in the server's process
adds a tail of its own. Each request is signed when it is sent (slack_sdk's v0 signature,
the timestamp of that moment), as Slack does.

A spec (JSON) says where to send what:

    {"url": "http://127.0.0.1:PORT/slack/events", "secret": "…",
     "requests": [[content_type, body, expect], …],
     "in_flight": 20,        # closed loop: that many requests outstanding at all times
     "rate": null,           # or: open loop, one request every 1/rate seconds
     "timeout": 30}

`expect` is a text the answer must contain to count as a success ("" means an empty
answer, as an ack() with nothing to say). The results (JSON) give, per request:
`sent` (time.monotonic() when it left; the clock is the machine's, so other processes'
monotonic times compare with it), `ms` (until the whole answer was read) and `error`
(null, or why it failed: HTTP status, no answer, another answer, slower than Slack's 3 s).

    python -m bench.loadgen SPEC OUT     one run
    python -m bench.loadgen              runs "SPEC OUT" lines read on stdin; "done" after each
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from slack_sdk.signature import SignatureVerifier

SLACK_TIMEOUT = 3.0  # Slack shows the user an error when the answer takes longer


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    url = str(spec["url"])
    verifier = SignatureVerifier(str(spec["secret"]))
    requests: list[list[str]] = spec["requests"]
    in_flight = int(spec.get("in_flight") or 0)
    rate = float(spec.get("rate") or 0)
    count = len(requests)
    sent = [0.0] * count
    ms = [0.0] * count
    errors: list[str | None] = [None] * count

    connector = aiohttp.TCPConnector(limit=in_flight if in_flight and not rate else 0)
    timeout = aiohttp.ClientTimeout(total=float(spec.get("timeout") or 30))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(i: int) -> None:
            content_type, body, expect = requests[i]
            data = body.encode()
            stamp = str(int(time.time()))
            signature = verifier.generate_signature(timestamp=stamp, body=body) or ""
            headers = {
                "Content-Type": content_type,
                "X-Slack-Request-Timestamp": stamp,
                "X-Slack-Signature": signature,
                "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            }
            error: str | None = None
            begin = time.monotonic()
            try:
                async with session.post(url, data=data, headers=headers) as response:
                    text = await response.text()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                text, status = "", 0
                error = f"no answer: {type(exc).__name__} {exc}".strip()
            end = time.monotonic()
            if error is not None:
                pass
            elif status != 200:
                error = f"HTTP {status}: {text[:160]}"
            elif (expect and expect not in text) or (not expect and text):
                error = f"answered: {text[:160]}"
            elif end - begin > SLACK_TIMEOUT:
                error = f"answered after {end - begin:.1f} s (Slack gives up at 3 s)"
            sent[i], ms[i], errors[i] = begin, (end - begin) * 1000, error

        if rate:
            start = time.monotonic()
            tasks = []
            for i in range(count):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(i)))
            await asyncio.gather(*tasks)
        else:
            indexes = itertools.count()

            async def worker() -> None:
                for i in indexes:  # shared: each index is taken once
                    if i >= count:
                        return
                    await send(i)

            await asyncio.gather(*(worker() for _ in range(max(1, in_flight))))
    return {"sent": sent, "ms": ms, "errors": errors}


def run_file(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    gc.collect()
    gc.disable()  # the generator's own pauses would be counted as the server's
    try:
        result = asyncio.run(run(spec))
    finally:
        gc.enable()
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")


def main() -> None:
    if len(sys.argv) == 3:
        run_file(sys.argv[1], sys.argv[2])
        return
    for line in sys.stdin:
        if not line.strip():
            continue
        spec_path, out_path = line.split()
        run_file(spec_path, out_path)
        print("done", flush=True)


if __name__ == "__main__":
    main()
