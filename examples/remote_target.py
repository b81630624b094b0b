"""A local draft with the target behind an OpenAI-compatible server, then SpecGuard itself
served over HTTP. Offline: `specguard serve --mode plain` stands in for vLLM.

.venv/bin/python examples/remote_target.py

With a real deployment, replace the first server by e.g.
`vllm serve Qwen/Qwen2.5-72B-Instruct --tensor-parallel-size 4 --enable-prefix-caching`.
"""

import signal
import socket
import subprocess
import sys
import time

import httpx

from specguard_integrations import EndpointTarget, LocalCausalLM, SpecGuard, SpecGuardConfig
from specguard_integrations.assets import DEFAULT_CONFIG, bundled_pair


def start(*args: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "specguard_integrations.cli",
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *args,
    ]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(url + "/health", timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    raise RuntimeError("server did not start")


def main() -> None:
    draft_dir, _ = bundled_pair()
    target_server, url = start("--mode", "plain")  # the bundled target, served alone
    try:
        target = EndpointTarget(url, "specguard-bundled/target")
        engine = SpecGuard(
            LocalCausalLM.from_pretrained(str(draft_dir), device="cpu"),
            target,
            SpecGuardConfig.from_file(DEFAULT_CONFIG),
        )
        result = engine.generate("Question: Solve 7x + 4 = 60 for x.\n")
        for step in result.steps:
            print(f"{step.source:>6}  r={step.fused:.3f}  {step.decision:>6}  {step.text!r}")
        print(result.summary())

        # SpecGuard itself over HTTP, called with the openai client
        from openai import OpenAI

        sg_server, sg_url = start("--mode", "specguard")
        try:
            client = OpenAI(base_url=sg_url + "/v1", api_key="unused")
            r = client.completions.create(
                model="specguard",
                prompt="Question: Kim has 4 eggs. Kim buys 3. Kim loses 2. How many eggs now?\n",
                max_tokens=160,
            )
            print(r.choices[0].text)
            print(r.model_extra["specguard"]["summary"])
        finally:
            sg_server.send_signal(signal.SIGTERM)
            sg_server.wait(30)
    finally:
        target_server.send_signal(signal.SIGTERM)
        target_server.wait(30)


if __name__ == "__main__":
    main()
