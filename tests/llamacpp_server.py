"""llama.cpp's own OpenAI-compatible server (`llama-server`), from the prebuilt `xllamacpp` wheel
(pinned in the dev extra: no source build), serving one GGUF model on loopback until killed.

    python tests/llamacpp_server.py MODEL.gguf --alias NAME --port N [--chat-template chatml]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--alias", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ctx", type=int, default=2048)
    p.add_argument("--chat-template", default=None, help="a built-in template name, e.g. chatml")
    p.add_argument(
        "--ubatch",
        type=int,
        default=1,
        help="tokens per physical batch; 1 (the default here) evaluates a prompt token by token,"
        " as generation does, so a step continued from a prompt rounds as the one-shot answer",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (1 here: the tests run beside another process on a 2-core machine,"
        " where llama.cpp's spinning threads would wait on each other)",
    )
    args = p.parse_args()

    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = args.model
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_ctx = args.ctx
    params.n_parallel = 1
    params.n_ubatch = args.ubatch
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = args.threads
    params.model_alias = {args.alias}
    if args.chat_template:
        params.chat_template = args.chat_template
    server = xlc.Server(params)
    print(f"listening on {server.listening_address}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
