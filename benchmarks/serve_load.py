"""Load a `specguard serve` (or any OpenAI-compatible) server: N concurrent clients for a bounded
time, half streaming, each response checked for shape. Prints throughput, latency percentiles,
status counts, and how many responses were lost or malformed (the server's contract: zero).

    .venv/bin/python benchmarks/serve_load.py --spawn specguard --concurrency 8 --duration 60
    .venv/bin/python benchmarks/serve_load.py --url http://127.0.0.1:8000 --model specguard

`--spawn` starts `specguard serve` on a free port (bundled pair), waits for it, and stops it
with SIGTERM at the end (its exit code is reported: 0 is a clean drain).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter

import httpx

from specguard_integrations.tasks import FAMILIES, make_split


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(
    mode: str,
    workers: int | None,
    max_queue: int,
    extra: list[str] | None = None,
    device: str = "cpu",
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "specguard_integrations.cli",
        "serve",
        "--mode",
        mode,
        "--port",
        str(port),
        *(["--workers", str(workers)] if workers is not None else []),
        "--max-queue",
        str(max_queue),
        "--log-level",
        "warning",
        "--device",
        device,
        *(extra or []),
    ]
    proc = subprocess.Popen(cmd, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not start")


SYSTEM_LINE = (
    "Rule {i}: answer in short numbered steps, quote numbers exactly, and end with a line that"
    " starts with Answer."
)


def prompts(n: int, system_words: int = 0) -> list[str]:
    """Held-out prompts; with `system_words`, each after one shared system text of about that
    many words (an agent's system prompt and tool list, the same for every client)."""
    fams = [f for f in FAMILIES if f != "tools"]
    lines, i = [], 0
    while sum(len(line.split()) for line in lines) < system_words:
        i += 1
        lines.append(SYSTEM_LINE.format(i=i))
    head = "\n".join(lines) + "\n\n" if lines else ""
    return [head + it.prompt for f in fams for it in make_split(f, "test", n)]


async def one(
    client: httpx.AsyncClient, url: str, model: str, prompt: str, stream: bool, max_tokens: int
) -> tuple[int, bool, int]:
    """(status, well formed, completion tokens) of one request."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
        async with client.stream("POST", url + "/v1/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return r.status_code, "error" in r.json(), 0
            lines = [ln async for ln in r.aiter_lines() if ln]
        if not lines or lines[-1] != "data: [DONE]":
            return 200, False, 0
        chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
        finished = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        usage = [c["usage"] for c in chunks if c.get("usage")]
        ok = len(finished) == 1 and len(usage) == 1 and all("error" not in c for c in chunks)
        return 200, ok, usage[0]["completion_tokens"] if usage else 0
    r = await client.post(url + "/v1/completions", json=body)
    data = r.json()
    if r.status_code != 200:
        return r.status_code, "error" in data, 0
    ok = (
        isinstance(data["choices"][0]["text"], str)
        and data["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")
        and data["usage"]["completion_tokens"] >= 0
    )
    return 200, ok, data["usage"]["completion_tokens"]


async def load(
    url: str, model: str, concurrency: int, duration: float, max_tokens: int, system: int = 0
) -> dict:
    ps = prompts(8, system)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    malformed = lost = tokens = 0
    stop_at = time.monotonic() + duration
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def worker(w: int) -> None:
            nonlocal malformed, lost, tokens
            i = w
            while time.monotonic() < stop_at:
                t0 = time.monotonic()
                try:
                    status, ok, n = await one(
                        client, url, model, ps[i % len(ps)], i % 2 == 1, max_tokens
                    )
                except (httpx.TransportError, json.JSONDecodeError, KeyError, IndexError):
                    lost += 1
                    i += concurrency
                    continue
                statuses[status] += 1
                malformed += not ok
                if status == 200:
                    latencies.append(time.monotonic() - t0)
                    tokens += n
                else:
                    await asyncio.sleep(0.05)  # back off on 503 like a polite client
                i += concurrency

        t0 = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = time.monotonic() - t0
    lat = sorted(latencies)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")  # noqa: E731
    return {
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "completed": len(lat),
        "throughput_rps": round(len(lat) / wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "p50_s": round(pct(0.50), 3),
        "p99_s": round(pct(0.99), 3),
        "mean_s": round(statistics.mean(lat), 3) if lat else None,
        "statuses": dict(statuses),
        "malformed": malformed,
        "lost": lost,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url")
    p.add_argument("--model", default="specguard")
    p.add_argument("--spawn", choices=("specguard", "plain"))
    p.add_argument(
        "--workers", type=int, default=None, help="server workers (with --spawn; default: its own)"
    )
    p.add_argument("--max-queue", type=int, default=64, help="server queue (with --spawn)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--duration", type=float, default=30.0, help="seconds per concurrency level")
    p.add_argument("--max-tokens", type=int, default=160)
    p.add_argument("--json", help="write the results here")
    p.add_argument(
        "--system-words",
        type=int,
        default=0,
        help="one shared system text of about this many words before every prompt",
    )
    p.add_argument("--device", default="cpu", help="the spawned server's device")
    p.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an argument for `specguard serve` (with --spawn; repeat it), e.g."
        " --serve-arg=--no-grouping",
    )
    args = p.parse_args()
    proc = None
    if args.spawn:
        proc, url = spawn(args.spawn, args.workers, args.max_queue, args.serve_arg, args.device)
        model = "specguard" if args.spawn == "specguard" else "specguard-bundled/target"
    elif args.url:
        url, model = args.url.rstrip("/"), args.model
    else:
        raise SystemExit("give --url or --spawn")
    results = []
    try:
        for c in args.concurrency:
            r = asyncio.run(load(url, model, c, args.duration, args.max_tokens, args.system_words))
            results.append(r)
            print(json.dumps(r))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            print(json.dumps({"server_exit_code": proc.wait(60)}))
    print(
        "\n| concurrency | completed | req/s | tokens/s | p50 s | p99 s | statuses | malformed "
        "| lost |\n|---|---|---|---|---|---|---|---|---|"
    )
    for r in results:
        print(
            f"| {r['concurrency']} | {r['completed']} | {r['throughput_rps']} | "
            f"{r['tokens_per_s']} | {r['p50_s']} | {r['p99_s']} | {r['statuses']} | "
            f"{r['malformed']} | {r['lost']} |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
