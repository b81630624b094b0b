"""A local Hugging Face causal LM with its incremental sequence state.

Everything model-specific is resolved here once, at load: device, dtype, EOS ids, context
window, whether attention probabilities can be had, and which modules are the attention layers.
The step loop never branches on a model family.

`SeqState` holds one generation's token ids and KV cache. Tokens are appended to `ids` and fed
lazily (`feed`), in one forward over everything not yet in the cache, so accepted text is
never re-encoded and a model that sat idle catches up in one batched prefill.

Single-sequence forwards and candidate sampling go through the model's `runner` (`runner.py`);
the model does not know whether a runtime groups them with other generations' calls.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import InvalidInputError, ModelError
from .special import eos_ids, special_texts, turn_ids
from .state import FeedOut, ForwardJob, SeqState

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .runner import Runner

log = logging.getLogger(__name__)
T = TypeVar("T")

# Prompt positions fed per forward when attention rows are collected: bounds the memory of the
# `(H, chunk, T)` attention tensors.
ATTENTION_CHUNK = 512


class LocalCausalLM:
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
        self.device = next(model.parameters()).device
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
        self.context_window = self._context_window()
        self.num_layers = int(model.config.get_text_config().num_hidden_layers)
        self._base_attn = str(getattr(model.config, "_attn_implementation", None) or "eager")
        self._attn_modules = self._find_attention_modules()
        self._checked_attn: set[str] = set()
        self.supports_grounding = attention and self._can_use_eager()
        # where single-sequence forwards and sampling jobs run: None, at once on the model's
        # own path; a runtime may plug in its own (`runner.py`)
        self.runner: Runner | None = None

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
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        from .loading import load_error, load_tokenizer, resolve_device, resolve_dtype

        hf_logging.disable_progress_bar()  # library code reports through logging, not bars
        tok_kwargs = model_kwargs.pop("tokenizer_kwargs", None) or {}
        placed = model_kwargs.get("device_map") is not None
        dev = "cpu" if placed and device in (None, "auto") else resolve_device(device)
        kwargs = {"dtype": resolve_dtype(dtype, dev), **model_kwargs}
        kwargs.setdefault("attn_implementation", "sdpa")
        try:
            model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
        except Exception as err:  # transformers raises many kinds for a path that is no model
            raise load_error(name_or_path, err) from None
        tok = tokenizer or load_tokenizer(name_or_path, tok_kwargs, **model_kwargs)
        if not placed:
            model.to(dev)  # type: ignore[arg-type]
        return cls(model, tok, name=name or str(name_or_path))

    def _context_window(self) -> int:
        cfg = self.model.config.get_text_config()
        for attr in ("max_position_embeddings", "n_positions", "seq_length"):
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        value = getattr(self.tokenizer, "model_max_length", None)
        return int(value) if isinstance(value, int) and 0 < value < 10**7 else 2048

    def _find_attention_modules(self) -> list[Any]:
        """The self-attention module of each decoder layer, in depth order."""
        mods = [
            m
            for _, m in self.model.named_modules()
            if type(m).__name__.endswith("Attention") and "Cross" not in type(m).__name__
        ]
        return mods if len(mods) == self.num_layers else []

    def _can_use_eager(self) -> bool:
        if not self._attn_modules:
            return False
        if self._base_attn == "eager":
            return True
        try:
            with self._eager():
                return bool(self.model.config._attn_implementation == "eager")
        except Exception:  # a model that cannot switch attention at run time
            return False

    def _eager(self) -> contextlib.AbstractContextManager[None]:
        """Eager attention for one pass (attention probabilities), fast attention otherwise."""
        return self.implementation("eager")

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

    # ---------------------------------------------------------------- text
    @property
    def pad_id(self) -> int:
        """The token fed as padding by rows that have ended (ignored): the lowest EOS id."""
        return min(self.eos_ids) if self.eos_ids else 0

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    # ---------------------------------------------------------------- text
    def encode_prompt(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def encode_continuation(self, text: str) -> list[int]:
        """Ids of `text` as it continues a sequence (no BOS, no added prefix space)."""
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        if self.decode(ids) == text or not text:
            return ids
        # SentencePiece-style tokenizers add a prefix space to a standalone string: encode after
        # an anchor and drop the anchor's ids.
        anchor = list(self.tokenizer.encode("\n", add_special_tokens=False))
        both = list(self.tokenizer.encode("\n" + text, add_special_tokens=False))
        if both[: len(anchor)] == anchor and self.decode(both[len(anchor) :]) == text:
            return both[len(anchor) :]
        return ids

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))

    @functools.cached_property
    def vocab_id(self) -> str:
        """A digest of the vocabulary: equal digests mean token ids can be exchanged with the
        other model without re-tokenising."""
        vocab = sorted(self.tokenizer.get_vocab().items())
        return hashlib.sha256(repr(vocab).encode("utf-8")).hexdigest()

    def same_vocab(self, other: LocalCausalLM) -> bool:
        """True when token ids can be exchanged with `other` without re-tokenising."""
        return self.tokenizer is other.tokenizer or self.vocab_id == other.vocab_id

    def render_chat(self, messages: list[dict[str, Any]], *, tools: list[Any] | None = None) -> str:
        """The chat template applied to messages exactly as given (a None value stays None: a
        template may test ``content is none``), with the assistant turn opened."""
        from ...tools.templates import render_as_given

        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInputError(f"tokenizer of {self.name} has no chat template")
        try:
            return render_as_given(
                self.tokenizer, messages, tools=tools, add_generation_prompt=True
            )
        except Exception as err:  # jinja raises its own errors (raise_exception, undefined)
            raise InvalidInputError(
                f"the chat template of {self.name} cannot render these messages: {err}"
            ) from None

    # ---------------------------------------------------------------- state
    def new_state(self, ids: list[int]) -> SeqState:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        # sliding-window layers (Gemma 3, Mistral) drop states past the window unless they
        # record them; a rejected step is cropped, so every layer must be able to roll back
        cache.activate_past_recording()
        return SeqState(ids=list(ids), cache=cache)

    def feed(self, state: SeqState, *, rollout_layers: int = 0, hidden: bool = False) -> FeedOut:
        """Run the model over `ids[fed:]`, extending the cache; all or nothing.

        Args:
            rollout_layers: > 0 collects the attention probabilities of that many last layers
                (eager attention for this pass only), chunked to bound memory.
            hidden: also return the last hidden state of each fed position.
        """
        import torch

        start = state.fed
        new = state.ids[start:]
        if not new:
            raise InvalidInputError("nothing to feed: all ids are already in the cache")
        chunk = ATTENTION_CHUNK if rollout_layers else max(len(new), 1)
        logits, hiddens, rows = [], [], []
        try:
            with torch.inference_mode():
                for lo in range(0, len(new), chunk):
                    out = self.forward(new[lo : lo + chunk], state.cache, rollout_layers, hidden)
                    logits.append(out.logits)
                    if out.hidden is not None:
                        hiddens.append(out.hidden)
                    if out.rows is not None:
                        rows.append(out.rows[0])
        except BaseException:
            self.crop(state.cache, start)
            raise
        state.fed = len(state.ids)
        result = FeedOut(logits=torch.cat(logits))
        if hiddens:
            result.hidden = torch.cat(hiddens)
            state.next_hidden = result.hidden[-1]
        if rows:
            result.rows = rows
        state.next_logits = result.logits[-1]
        return result

    def forward(
        self, ids: list[int], cache: Any, rollout_layers: int = 0, hidden: bool = False
    ) -> FeedOut:
        """One sequence's forward of `ids` `(T,)` over its cache (which grows): logits `(T, V)`,
        through the model's runner."""
        if self.runner is None:
            return self.forward_alone(ids, cache, rollout_layers, hidden)
        return self.runner.forward(ForwardJob(cache, ids, rollout_layers, hidden))

    def forward_alone(
        self, ids: list[int], cache: Any, rollout_layers: int = 0, hidden: bool = False
    ) -> FeedOut:
        """`forward` on the model's own path (what a runner runs for a job alone)."""
        import torch

        batch = torch.tensor([ids], device=self.device)  # (1, T)
        out, attn = self._run(batch, cache, rollout_layers, hidden)
        rows = [[a[0] for a in attn]] if rollout_layers else None  # [[(H, T, Tk) per layer]]
        hid = out.hidden_states[-1][0].float() if hidden else None  # (T, d)
        return FeedOut(logits=out.logits[0].float(), hidden=hid, rows=rows)

    def attend(
        self, ids: torch.Tensor, cache: Any, layers: int = 1
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits `(B, T, V)` and the attention probabilities `(B, H, T, Tk)` of the last
        `layers` layers (lowest first) for a batch `ids` `(B, T)` over `cache` (which grows)."""
        import torch

        with torch.inference_mode():
            out, attn = self._run(ids, cache, layers, False)
        return out.logits, attn

    def _run(
        self, ids: torch.Tensor, cache: Any, layers: int, hidden: bool
    ) -> tuple[Any, list[torch.Tensor]]:
        """The model's output, with the attention of the last `layers` layers captured by hooks
        (eager attention for this pass only)."""
        return self.call(self._run_held, ids, cache, layers, hidden)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` as tensor work on this model's device (through the runner), in inference
        mode."""
        if self.runner is not None:
            return self.runner.call(fn, *args)
        import torch

        with torch.inference_mode():
            return fn(*args)

    def _run_held(
        self, ids: torch.Tensor, cache: Any, layers: int, hidden: bool
    ) -> tuple[Any, list[torch.Tensor]]:
        with self.lock:
            return self._run_locked(ids, cache, layers, hidden)

    def _run_locked(
        self, ids: torch.Tensor, cache: Any, layers: int, hidden: bool
    ) -> tuple[Any, list[torch.Tensor]]:
        captured: list[torch.Tensor | None] = []
        handles = [
            mod.register_forward_hook(
                lambda _m, _i, out: captured.append(
                    out[1] if isinstance(out, tuple) and len(out) > 1 else None
                )
            )
            for mod in (self._attn_modules[-layers:] if layers else [])
        ]
        try:
            with self._eager() if layers else contextlib.nullcontext():
                out = self.model(
                    input_ids=ids, cache=cache, use_cache=True, output_hidden_states=hidden
                )
        finally:
            for h in handles:
                h.remove()
        if layers and (len(captured) != layers or any(c is None for c in captured)):
            raise AttentionUnavailable(self.name)
        return out, [c for c in captured if c is not None]

    def step_batch(
        self, tokens: torch.Tensor, cache: Any, *, hidden: bool, alone: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decode one token per row: `(B,)` tokens -> logits `(B, V)`, hidden `(B, d)` or None.
        A single row goes through the runner unless `alone`."""
        import torch

        if tokens.numel() == 1:
            run = self.forward_alone if alone else self.forward
            one = run([int(tokens.item())], cache, 0, hidden)
            return one.logits[-1:], None if one.hidden is None else one.hidden[-1:]
        with torch.inference_mode():
            out, _ = self._run(tokens.view(-1, 1), cache, 0, hidden)
        hid = out.hidden_states[-1][:, -1].float() if hidden else None
        return out.logits[:, -1].float(), hid

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


class AttentionUnavailable(ModelError):
    def __init__(self, name: str) -> None:
        super().__init__(f"{name} did not return attention probabilities")
