"""A local Hugging Face causal LM with its incremental sequence state.

Everything model-specific is resolved here once, at load: device, dtype, EOS ids, context
window, whether attention probabilities can be had, and which modules are the attention layers.
The step loop never branches on a model family.

`SeqState` holds one generation's token ids and KV cache. Tokens are appended to `ids` and fed
lazily (`feed`), in chunked forwards over everything not yet in the cache, so accepted text is
never re-encoded and a model that sat idle catches up in one batched prefill. A feed computes
the logits (and last hidden states) of the positions it is asked to keep only, and hands each
chunk's attention rows to its caller as they come: a long prompt never holds `(T, V)` logits or
every chunk's `(H, Tc, T)` attention.

Single-sequence forwards and candidate sampling go through the model's `runner` (`runner.py`);
the model does not know whether a runtime groups them with other generations' calls.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import InvalidInputError
from .attention import AttentionUnavailable
from .loading import attention_modules, context_window
from .prefix_cache import PrefixCache
from .special import eos_ids, special_texts, turn_ids
from .state import FeedOut, ForwardJob, SeqState
from .text import TextSide

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .runner import Runner

log = logging.getLogger(__name__)
T = TypeVar("T")

# Positions fed per forward: with attention rows collected, this bounds the `(H, chunk, T)`
# float32 attention of the captured layers; without, the activations of one forward.
ATTENTION_CHUNK = 512
PREFILL_CHUNK = 2048


class LocalCausalLM(TextSide):
    """A loaded causal LM and tokenizer, with device, dtype and special ids resolved once.

    Args:
        model: a transformers causal LM (any architecture whose attention layers follow the
            attention interface; others still run, confidence-only).
        tokenizer: its tokenizer.
        name: the name shown in records and metadata (defaults to the model's name_or_path).
        attention: False forces confidence-only scoring for this model.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str | None = None,
        attention: bool = True,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or str(getattr(model.config, "name_or_path", "") or type(model).__name__)
        # where input ids go: the embedding's device (with a device_map, layers may sit on others)
        self.device: torch.device = model.get_input_embeddings().weight.device  # type: ignore[assignment]
        self.lock = threading.RLock()  # one forward at a time on this model
        emb = int(model.get_input_embeddings().weight.shape[0])  # type: ignore[index]
        if len(tokenizer) > emb:
            raise InvalidInputError(
                f"tokenizer of {self.name} has {len(tokenizer)} tokens but the model embeds only"
                f" {emb}: the tokenizer does not belong to this model"
            )
        self.special_texts = special_texts(tokenizer)
        # generation ends at EOS and at any token that opens or closes a chat turn: content
        # never runs into a new turn the model starts writing
        self.eos_ids = eos_ids(model, tokenizer) | turn_ids(tokenizer)
        self.context_window = context_window(model, tokenizer)
        self.num_layers = int(model.config.get_text_config().num_hidden_layers)
        self._base_attn = str(getattr(model.config, "_attn_implementation", None) or "eager")
        self._attn_modules = attention_modules(model, self.num_layers)
        self._checked_attn: set[str] = set()
        self.supports_grounding = attention and self._can_capture()
        # logits of the kept positions only (`logits_to_keep`), where the model's forward takes it
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._head = model.get_output_embeddings()
        # where single-sequence forwards and sampling jobs run: None, at once on the model's
        # own path; a runtime may plug in its own (`runner.py`)
        self.runner: Runner | None = None
        # what this model read across calls, shared by every session of it (`prefix_cache.py`)
        self.prefix_cache = PrefixCache()

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        device: str | None = "auto",
        dtype: Any = "auto",
        tokenizer: PreTrainedTokenizerBase | None = None,
        name: str | None = None,
        **model_kwargs: Any,
    ) -> LocalCausalLM:
        """Load a model id or local directory with `AutoModelForCausalLM.from_pretrained`.

        `model_kwargs` go to the model's `from_pretrained` (``revision``, ``trust_remote_code``,
        ``gguf_file``, ``device_map``, ``quantization_config``, ``attn_implementation``, ...);
        the ones that also locate the tokenizer (`loading.TOKENIZER_KWARGS`) go to
        `AutoTokenizer.from_pretrained` too, with ``tokenizer_kwargs`` (a dict) for it alone.
        With ``device_map`` the weights are placed by accelerate and `device` is not applied.
        """
        from .loading import load_model

        model, tok = load_model(name_or_path, device, dtype, tokenizer, model_kwargs)
        return cls(model, tok, name=name or str(name_or_path))

    def _can_capture(self) -> bool:
        """Whether the rollout layers' attention can be captured (`attention.py`): the model's
        attention layers are found, each with its index, and it switches implementation."""
        from .attention import IMPLEMENTATION, register

        if not self._attn_modules:
            return False
        if any(getattr(m, "layer_idx", None) is None for m in self._attn_modules):
            return False
        register()
        try:
            with self.implementation(IMPLEMENTATION):
                return bool(self.model.config._attn_implementation == IMPLEMENTATION)
        except Exception:  # a model that cannot switch attention at run time
            return False

    @contextlib.contextmanager
    def implementation(self, name: str) -> Iterator[None]:
        """The model's attention implementation set to `name` for one pass (hold `lock`).

        The first switch to a name goes through `set_attn_implementation` (which checks it);
        later ones set the configs it changed directly (it walks every module, per call)."""
        if self._base_attn == name:
            yield
            return
        if name not in self._checked_attn:
            self.model.set_attn_implementation(name)
            self.model.set_attn_implementation(self._base_attn)
            self._checked_attn.add(name)
        configs = self._attn_configs
        saved = [c._attn_implementation_internal for c in configs]
        for c in configs:
            c._attn_implementation_internal = name
        try:
            yield
        finally:
            for c, value in zip(configs, saved, strict=True):
                c._attn_implementation_internal = value

    @functools.cached_property
    def _attn_configs(self) -> list[Any]:
        from .loading import attention_configs

        return attention_configs(self.model)

    # ---------------------------------------------------------------- state
    def new_state(self, ids: list[int]) -> SeqState:
        from transformers import DynamicCache

        from .state import keep_history

        cache = DynamicCache(config=self.model.config)
        # sliding-window layers (Gemma 3, Mistral) drop states past the window: a rejected step
        # is cropped, and a cached prefix is cropped to where a later call diverges, so every
        # layer keeps its history (`state.keep_history`)
        keep_history(cache)
        return SeqState(ids=list(ids), cache=cache)

    def feed(
        self,
        state: SeqState,
        *,
        rollout_layers: int = 0,
        hidden: bool = False,
        keep: int = 1,
        on_rows: Callable[[list[torch.Tensor], int], None] | None = None,
    ) -> FeedOut:
        """Run the model over `ids[fed:]` in chunks, extending the cache; all or nothing.

        Args:
            rollout_layers: > 0 captures the float32 attention probabilities of that many last
                layers (those layers only, `attention.py`).
            hidden: also return the last hidden state of each kept position.
            keep: the last `keep` fed positions whose logits (and hidden states) are returned,
                `(keep, V)`; no other position's logits are computed. The last row is also the
                state's next logits.
            on_rows: with `rollout_layers`, called as ``on_rows(rows, pos)`` after each chunk,
                with that chunk's attention (per layer, lowest first, `(H, Tc, Tk)`) and its
                first position; the rows are dropped after. Without it the rows of every
                chunk are returned (a short feed: one step).
        """
        import torch

        start = state.fed
        new = state.ids[start:]
        if not new:
            raise InvalidInputError("nothing to feed: all ids are already in the cache")
        chunk = ATTENTION_CHUNK if rollout_layers else PREFILL_CHUNK
        keep = max(1, min(keep, len(new)))
        logits, hiddens, rows = [], [], []
        try:
            with torch.inference_mode():
                for lo in range(0, len(new), chunk):
                    piece = new[lo : lo + chunk]
                    wanted = keep - (len(new) - lo - len(piece))  # kept rows in this chunk
                    out = self.forward(
                        piece, state.cache, rollout_layers, hidden, keep=max(1, wanted)
                    )
                    if wanted > 0:
                        logits.append(out.logits[-wanted:])
                        if out.hidden is not None:
                            hiddens.append(out.hidden[-wanted:])
                    if out.rows is not None and on_rows is not None:
                        on_rows(out.rows[0], start + lo)
                    elif out.rows is not None:
                        rows.append(out.rows[0])
        except BaseException:
            self.crop(state.cache, start)
            raise
        state.fed = len(state.ids)
        result = FeedOut(logits=torch.cat(logits) if len(logits) > 1 else logits[0])
        if hiddens:
            result.hidden = torch.cat(hiddens) if len(hiddens) > 1 else hiddens[0]
            state.next_hidden = result.hidden[-1]
        if rows:
            result.rows = rows
        state.next_logits = result.logits[-1]
        return result

    def forward(
        self,
        ids: list[int],
        cache: Any,
        rollout_layers: int = 0,
        hidden: bool = False,
        keep: int | None = None,
    ) -> FeedOut:
        """One sequence's forward of `ids` `(T,)` over its cache (which grows), through the
        model's runner: logits `(keep, V)` of the last `keep` positions (None: all `T`)."""
        if self.runner is None:
            return self.forward_alone(ids, cache, rollout_layers, hidden, keep)
        return self.runner.forward(ForwardJob(cache, ids, rollout_layers, hidden, keep=keep))

    def forward_alone(
        self,
        ids: list[int],
        cache: Any,
        rollout_layers: int = 0,
        hidden: bool = False,
        keep: int | None = None,
    ) -> FeedOut:
        """`forward` on the model's own path (what a runner runs for a job alone)."""
        import torch

        batch = torch.tensor([ids], device=self.device)  # (1, T)
        logits, hid, attn = self._run(batch, cache, rollout_layers, hidden, keep)
        rows = [[a[0] for a in attn]] if rollout_layers else None  # [[(H, T, Tk) per layer]]
        return FeedOut(
            logits=logits[0].float(), hidden=None if hid is None else hid[0].float(), rows=rows
        )

    def attend(
        self, ids: torch.Tensor, cache: Any, layers: int = 1
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits `(B, T, V)` and the float32 attention probabilities `(B, H, T, Tk)` of the last
        `layers` layers (lowest first) for a batch `ids` `(B, T)` over `cache` (which grows)."""
        import torch

        with torch.inference_mode():
            logits, _, attn = self._run(ids, cache, layers, False, None)
        return logits, attn

    def _run(
        self, ids: torch.Tensor, cache: Any, layers: int, hidden: bool, keep: int | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        """Logits `(B, keep, V)`, last hidden states `(B, keep, d)` (or None) and the attention
        of the last `layers` layers, captured by hooks."""
        return self.call(self._run_held, ids, cache, layers, hidden, keep)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` as tensor work on this model's device (through the runner), in inference
        mode."""
        if self.runner is not None:
            return self.runner.call(fn, *args)
        import torch

        with torch.inference_mode():
            return fn(*args)

    def _run_held(
        self, ids: torch.Tensor, cache: Any, layers: int, hidden: bool, keep: int | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        with self.lock:
            return self._run_locked(ids, cache, layers, hidden, keep)

    def _run_locked(
        self, ids: torch.Tensor, cache: Any, layers: int, hidden: bool, keep: int | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        from .attention import IMPLEMENTATION, capturing

        captured: list[torch.Tensor | None] = []
        mods = self._attn_modules[-layers:] if layers else []
        handles = [
            mod.register_forward_hook(
                lambda _m, _i, out: captured.append(
                    out[1] if isinstance(out, tuple) and len(out) > 1 else None
                )
            )
            for mod in mods
        ]
        try:
            with contextlib.ExitStack() as stack:
                if layers:
                    stack.enter_context(self.implementation(IMPLEMENTATION))
                    stack.enter_context(capturing(frozenset(m.layer_idx for m in mods)))
                logits, hid = self.model_call(ids, cache, hidden=hidden, keep=keep)
        finally:
            for h in handles:
                h.remove()
        if layers and (len(captured) != layers or any(c is None for c in captured)):
            raise AttentionUnavailable(self.name)
        return logits, hid, [c for c in captured if c is not None]

    def model_call(
        self,
        ids: torch.Tensor,
        cache: Any,
        *,
        positions: torch.Tensor | None = None,
        hidden: bool = False,
        keep: int | list[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The model over `ids` `(B, T)`: logits `(B, K, V)` of the kept positions only (the
        last `keep`, or those listed; None: all), and with `hidden` the last hidden states of
        the same positions, as the output head reads them (no other layer's is kept)."""
        import torch

        heads: list[torch.Tensor] = []
        hook = (
            self._head.register_forward_hook(lambda _m, i, _o: heads.append(i[0]))
            if hidden
            else None
        )
        extra: dict[str, Any] = {} if positions is None else {"position_ids": positions}
        if keep is not None and self._keeps_logits:
            picked = keep if isinstance(keep, int) else torch.tensor(keep, device=self.device)
            extra["logits_to_keep"] = picked
        try:
            out = self.model(input_ids=ids, cache=cache, use_cache=True, **extra)
        finally:
            if hook is not None:
                hook.remove()
        logits, hid = out.logits, heads[-1] if heads else None
        if keep is not None and not self._keeps_logits:  # sliced here instead
            index = slice(-keep, None) if isinstance(keep, int) else keep
            logits = logits[:, index]
            hid = None if hid is None else hid[:, index]
        return logits, hid

    def step_batch(
        self, tokens: list[int], cache: Any, *, hidden: bool, alone: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decode one token per row: `B` tokens -> logits `(B, V)`, hidden `(B, d)` or None.
        A single row goes through the runner unless `alone`."""
        import torch

        if len(tokens) == 1:
            run = self.forward_alone if alone else self.forward
            one = run(tokens, cache, 0, hidden, 1)
            return one.logits[-1:], None if one.hidden is None else one.hidden[-1:]
        feed = torch.tensor(tokens, device=self.device).view(-1, 1)  # (B, 1)
        with torch.inference_mode():
            logits, hid, _ = self._run(feed, cache, 0, hidden, 1)
        return logits[:, -1].float(), None if hid is None else hid[:, -1].float()

    def rollback(self, state: SeqState, length: int) -> None:
        """Forget everything after the first `length` ids (cache, ids and mass vectors)."""
        if length > len(state.ids):
            raise InvalidInputError(f"cannot roll back to {length} > {len(state.ids)} ids")
        if state.fed > length:
            self.crop(state.cache, length)
            state.fed = length
            state.next_logits = None
            state.next_hidden = None
        del state.ids[length:]
        if state.mass is not None:
            state.mass = [m[:length] for m in state.mass]

    @staticmethod
    def crop(cache: Any, length: int) -> None:
        extra = cache.get_seq_length() - length
        if extra > 0:
            cache.crop(-extra)

    def repeat_cache(self, cache: Any, k: int) -> Any:
        """A copy of the cache with the batch repeated k times (the original is untouched)."""
        import copy

        twin = copy.copy(cache)
        twin.layers = [copy.copy(layer) for layer in cache.layers]
        twin.batch_repeat_interleave(k)
        return twin
