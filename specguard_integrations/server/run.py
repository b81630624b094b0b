"""Running the server: `specguard serve` flags, the served model they name, uvicorn and signals.

On SIGINT/SIGTERM the server stops accepting, lets in-flight requests finish for ``--grace``
seconds, then cancels the rest between steps (their clients see the connection close; no
half-written response is sent as if complete), and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from ..errors import InvalidInputError, MissingDependencyError
from .state import Limits

if TYPE_CHECKING:
    from .served import ServedModel

API_KEY_ENV = "SPECGUARD_API_KEY"


def add_serve_args(p: argparse.ArgumentParser) -> None:
    """The serve flags (the model pair flags come from the CLI)."""
    _add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key",
        default=None,
        help=f"require this bearer token on /v1 routes (default: ${API_KEY_ENV} if set)",
    )
    p.add_argument(
        "--no-grouping",
        action="store_true",
        help="run every model call plain, never grouped with other requests' (to measure what"
        " grouping gives)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="generations run at once; their model calls share grouped forwards (the step"
        " scheduler), so this is the largest batch (default: 16 with a GPU or a remote"
        " model, 1 when every model runs on the CPU)",
    )
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond workers")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000)
    p.add_argument("--body-timeout", type=float, default=30.0, help="seconds to receive a body")
    p.add_argument("--grace", type=float, default=30.0, help="seconds to finish on shutdown")
    p.add_argument("--log-level", default="info")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """What is served: the mode, a remote target, the chat surface's formats."""
    from ..backends.remote.profiles import PROFILES
    from ..tools import registered

    p.add_argument(
        "--mode",
        choices=("specguard", "plain"),
        default="specguard",
        help="specguard: the step loop; plain: one model alone (--model), e.g. a remote target",
    )
    p.add_argument("--model", help="plain mode: the model (default: the bundled target)")
    p.add_argument(
        "--model-kwargs", default=None, help="plain mode: from_pretrained options (JSON)"
    )
    p.add_argument("--target-endpoint", help="base URL of an OpenAI-compatible target server")
    p.add_argument("--target-model", help="the target's name on --target-endpoint")
    p.add_argument("--target-api", choices=("completions", "chat"), default="completions")
    p.add_argument(
        "--target-timeout",
        type=float,
        default=60.0,
        help="seconds each request to --target-endpoint may take, connect plus the whole body"
        " (default: 60)",
    )
    p.add_argument(
        "--target-max-retries",
        type=int,
        default=2,
        help="extra attempts per request to --target-endpoint on a refused or dropped"
        " connection, a timeout, 429 or 5xx (default: 2)",
    )
    p.add_argument(
        "--target-engine",
        choices=("auto", *(k for k in PROFILES if k != "specguard")),
        default="auto",
        help="the engine behind --target-endpoint (default: read off the server)",
    )
    p.add_argument("--served-model-name", help="model name clients ask for")
    p.add_argument(
        "--tool-call-format",
        choices=sorted(registered()),
        help="tool-call text by vLLM parser name (default: read off the chat template)",
    )
    p.add_argument(
        "--reasoning",
        action="store_true",
        help="chat replies: steps before the answer in reasoning_content, the answer in content",
    )


def served_from_args(args: argparse.Namespace) -> ServedModel:
    """The served model the flags name."""
    from ..registry import build_pair, load_lm, resolve
    from .served import PlainServed, SpecGuardServed

    if args.mode == "plain":
        kwargs = _json_flag(args.model_kwargs, "--model-kwargs")
        lm = load_lm(resolve(args.model, "target"), device=args.device, **kwargs)
        return PlainServed(lm, args.served_model_name)
    target = args.target
    if args.target_endpoint:
        from ..backends.remote.endpoint import EndpointTarget

        if not args.target_model:
            raise InvalidInputError("--target-endpoint needs --target-model")
        if args.target:
            raise InvalidInputError("give --target or --target-endpoint, not both")
        target = EndpointTarget(
            args.target_endpoint,
            args.target_model,
            api=args.target_api,
            engine=args.target_engine,
            timeout=args.target_timeout,
            max_retries=args.target_max_retries,
        )
    engine = build_pair(
        args.draft,
        target,
        config_file=args.config,
        device=args.device,
        dtype=args.dtype,
        draft_kwargs=args.draft_kwargs,
        target_kwargs=args.target_kwargs,
        judge=args.judge,
    )
    cfg = engine.config
    name = args.served_model_name or "specguard"
    return SpecGuardServed(
        engine, cfg, name, reasoning=args.reasoning, tool_call_format=args.tool_call_format
    )


def _json_flag(value: str | None, flag: str) -> dict[str, Any]:
    import json

    if value is None:
        return {}
    try:
        data = json.loads(value)
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{flag}: not JSON: {err}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{flag}: must be a JSON object")
    return data


def serve_from_args(args: argparse.Namespace) -> int:
    import dataclasses

    limits = Limits(  # checked before the models load
        workers=1 if args.workers is None else args.workers,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        body_timeout=args.body_timeout,
        api_key=args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV),
    )
    if args.no_grouping:
        from ..runtime.scheduler import SCHEDULER

        SCHEDULER.allow_grouping = False
    served = served_from_args(args)
    if args.workers is None:
        limits = dataclasses.replace(limits, workers=served.default_workers())
    serve(
        served,
        limits,
        host=args.host,
        port=args.port,
        grace=args.grace,
        log_level=args.log_level,
    )
    return 0


def serve(
    served: ServedModel,
    limits: Limits | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    grace: float = 30.0,
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info",
) -> None:
    """Run the server until SIGINT/SIGTERM, then shut down gracefully (see module docs)."""
    try:
        import starlette  # noqa: F401 - checked here so the error names the extra
        import uvicorn
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "specguard serve needs the [serve] extra: pip install 'specguard-integrations[serve]'"
        ) from err
    from .app import create_app

    config = uvicorn.Config(
        create_app(served, limits or Limits()),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=int(grace) if grace > 0 else None,
    )
    _server_class()(config).run()


def _server_class() -> Any:
    import signal

    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM after its graceful shutdown (exit 143); a drained server
        here exits 0, so process managers see a clean stop."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            sigs = (signal.SIGINT, signal.SIGTERM)
            old = {s: signal.signal(s, self.handle_exit) for s in sigs}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)

    return _Server
