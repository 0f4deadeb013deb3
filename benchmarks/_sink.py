"""A minimal Benevity-shaped server for the memory benchmark.

It responds to the token endpoint and ``POST /donations`` with fixed JSON
and keeps nothing, so its speed and memory stay flat over a million requests.
It checks no credentials and no payload: the simulator does that in the
throughput benchmark. An optional second argument delays every response
by that many milliseconds, to stand in for a platform across a network.

    python benchmarks/_sink.py PORT [DELAY_MS]
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_TOKEN = json.dumps(
    {"access_token": "sink-token", "token_type": "Bearer", "expires_in": 86400}
).encode()
_counter = itertools.count(1)
_delay_s = 0.0


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["path"].endswith("/oauth2/token"):
        status, body = 200, _TOKEN
    elif scope["path"].endswith("/donations"):
        donation = {"id": f"don-{next(_counter)}", "state": {"processingStatus": "OK"}}
        status, body = 201, json.dumps(donation).encode()
    else:
        status, body = 404, b'{"error": "not found"}'
    if _delay_s:
        await asyncio.sleep(_delay_s)
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    import uvicorn

    if len(sys.argv) > 2:
        _delay_s = float(sys.argv[2]) / 1000

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
