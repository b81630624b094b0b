"""A model's cache of sequences it has read, across calls: a new call feeds only what follows
its longest cached prefix (an agent's system prompt, tool schemas and history are read once).

The shape serving engines use (vLLM's automatic prefix caching, SGLang's RadixAttention):
entries are keyed by token ids, indexed by the hash chain of their 16-token blocks; a lookup
walks the new ids block by block and finishes token by token against the longest candidate.
An entry holds what the next feed needs:

- the KV cache of its ids (never mutated: a hit gets a private copy cropped to the match);
- the logits and last hidden state after its last id (usable when the match is the whole
  entry);
- for a draft that reads grounding, the rollout mass vectors of its positions (`SeqState.mass`),
  with the signal settings they were made under (another setting's mass is not reused).

Whatever a generation committed (prompt and accepted steps) is offered when it ends; the
offering session hands its state over (it is done with it). The cache is bounded in bytes and
evicts the least recently used entries; one lock guards it, so concurrent requests (the step
scheduler, the server) share it.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .state import SeqState

if TYPE_CHECKING:
    import torch

BLOCK = 16  # tokens per hashed block of the index


@dataclass(eq=False)  # entries are compared by identity
class Entry:
    ids: list[int]
    cache: Any  # a DynamicCache over all of `ids`; read only
    logits: torch.Tensor | None  # (V,) after ids[-1]
    hidden: torch.Tensor | None  # (d,) last hidden state at ids[-1]
    mass: list[torch.Tensor] | None  # rollout mass vectors, each (len(ids),)
    mass_key: Hashable | None  # the signal settings `mass` was made under
    mass_valid: int  # leading positions whose mass holds whatever prompt they belong to
    nbytes: int = 0
    floor: int = 0  # the shortest length its cache can be cropped back to (sliding windows)
    used: int = 0  # the tick of its last use (least recently used goes first)
    hashes: list[int] = field(default_factory=list)  # the chain hash of each full block


@dataclass
class Hit:
    """A private copy of a cached prefix: its KV cache over `ids[:length]`, the next logits and
    hidden state when the match is a whole entry (else None: the caller feeds on from there),
    and the mass vectors of those positions when asked."""

    length: int
    cache: Any
    logits: torch.Tensor | None
    hidden: torch.Tensor | None
    mass: list[torch.Tensor] | None


def _chain(ids: list[int]) -> list[int]:
    """The hash of each full block of `ids`, each chained to the ones before it."""
    out, h = [], 0
    for i in range(len(ids) // BLOCK):
        h = hash((h, tuple(ids[i * BLOCK : (i + 1) * BLOCK])))
        out.append(h)
    return out


def _common(a: list[int], b: list[int]) -> int:
    """The length of the common prefix of `a` and `b` (a binary search over slice equality:
    each comparison runs in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _crop_floor(cache: Any) -> int:
    """The shortest length `cache` can still be cropped to. A sliding-window layer (Gemma 3,
    Mistral) keeps only its window once it has been cropped, so it cannot go back past the
    window before its last crop; full layers can go back to 0."""
    floor = 0
    for layer in getattr(cache, "layers", ()):
        window = getattr(layer, "sliding_window", None)
        length = getattr(layer, "cumulative_length", None)
        keys = getattr(layer, "keys", None)
        if not getattr(layer, "is_sliding", False) or window is None or length is None:
            continue
        lost = int(length) - int(keys.shape[-2]) if keys is not None else 0
        if lost > 0:  # states before `lost` are gone: a crop must keep its window after them
            floor = max(floor, lost + int(window) - 1)
    return floor


def _nbytes(cache: Any, *tensors: Any) -> int:
    total = 0
    for layer in getattr(cache, "layers", ()):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None:
                total += t.numel() * t.element_size()
    for t in tensors:
        if isinstance(t, list):
            total += sum(x.numel() * x.element_size() for x in t)
        elif t is not None:
            total += t.numel() * t.element_size()
    return total


class PrefixCache:
    """Sequences a model has read, by token ids, within `capacity` bytes (0: off)."""

    def __init__(self, capacity: int = 0) -> None:
        self.capacity = capacity
        self._entries: list[Entry] = []
        self._index: dict[int, list[Entry]] = {}  # chain hash of a block -> entries with it
        self._lock = threading.Lock()
        self._tick = itertools.count(1)
        self.hits = self.lookups = self.tokens_reused = 0

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def resize(self, capacity: int) -> None:
        """Bound the cache to `capacity` bytes, evicting at once what no longer fits."""
        with self._lock:
            self.capacity = capacity
            self._evict(0)

    def clear(self) -> None:
        with self._lock:
            self._entries, self._index = [], {}

    # ---------------------------------------------------------------- lookup
    def lookup(self, ids: list[int], mass_key: Hashable | None = None) -> Hit | None:
        """The longest cached prefix of `ids` as a private copy, or None. A caller that needs
        rollout mass (`mass_key` given) is matched only where mass made under the same
        settings exists. At least one id is always left to feed unless the match is a whole
        entry whose next logits are kept."""
        with self._lock:
            self.lookups += 1
            found = self._longest(ids, mass_key)
            if found is None:
                return None
            entry, n = found
            entry.used = next(self._tick)
            self.hits += 1
            self.tokens_reused += n
        whole = n == len(entry.ids) and entry.logits is not None
        cache = copy.deepcopy(entry.cache)
        extra = len(entry.ids) - n
        if extra > 0:
            cache.crop(-extra)
        mass = None if mass_key is None or entry.mass is None else [m[:n] for m in entry.mass]
        return Hit(
            n,
            cache,
            entry.logits if whole else None,
            entry.hidden if whole else None,
            mass,
        )

    def _longest(self, ids: list[int], mass_key: Hashable | None) -> tuple[Entry, int] | None:
        def usable(e: Entry) -> bool:
            return mass_key is None or (e.mass is not None and e.mass_key == mass_key)

        # narrowed by whole blocks through the index, then compared token by token
        candidates = {id(e): e for e in self._entries if usable(e)}
        for h in _chain(ids):
            there = {id(e): e for e in self._index.get(h, ()) if id(e) in candidates}
            if not there:
                break
            candidates = there
        best: tuple[Entry, int] | None = None
        for e in candidates.values():
            n = _common(e.ids, ids)
            if mass_key is not None:
                n = min(n, e.mass_valid)
            if n == len(ids) and not (n == len(e.ids) and e.logits is not None):
                n -= 1  # the last id is fed again: its logits are the next ones
            if n < len(e.ids) and n < e.floor:  # its cache cannot go back that far
                continue
            if n > 0 and (best is None or n > best[1]):
                best = (e, n)
        return best

    # ---------------------------------------------------------------- offer
    def offer(
        self,
        ids: list[int],
        cache: Any,
        *,
        logits: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        mass: list[torch.Tensor] | None = None,
        mass_key: Hashable | None = None,
        mass_valid: int | None = None,
    ) -> bool:
        """Keep a sequence a generation read (`cache` over all of `ids`, handed over: the
        caller no longer uses it). An entry it extends is replaced; one that already covers it
        makes it redundant. False when it was not kept (off, empty, or larger than the
        whole cache)."""
        if self.capacity <= 0 or not ids:
            return False
        nbytes = _nbytes(cache, logits, hidden, mass)
        if nbytes > self.capacity:
            return False
        entry = Entry(
            list(ids),
            cache,
            logits,
            hidden,
            mass,
            mass_key,
            len(ids) if mass_valid is None else mass_valid,
            nbytes,
            _crop_floor(cache),
        )
        entry.hashes = _chain(entry.ids)
        with self._lock:
            for e in self._entries:
                covers = len(e.ids) >= len(ids) and e.ids[: len(ids)] == entry.ids
                if covers and (e.mass is not None or mass is None) and e.mass_key == mass_key:
                    e.used = next(self._tick)
                    return False
            stale = [
                e
                for e in self._entries
                if len(e.ids) <= len(ids)
                and entry.ids[: len(e.ids)] == e.ids
                and (e.mass is None or (mass is not None and e.mass_key == mass_key))
            ]
            for e in stale:
                self._drop(e)
            entry.used = next(self._tick)
            self._entries.append(entry)
            for h in entry.hashes:
                self._index.setdefault(h, []).append(entry)
            self._evict(0)
        return True

    def _drop(self, entry: Entry) -> None:
        self._entries.remove(entry)
        for h in entry.hashes:
            bucket = self._index.get(h)
            if bucket is not None:
                bucket.remove(entry)
                if not bucket:
                    del self._index[h]

    def _evict(self, room: int) -> None:
        """Drop least recently used entries until `room` more bytes fit (lock held)."""
        total = sum(e.nbytes for e in self._entries)
        for e in sorted(self._entries, key=lambda x: x.used):
            if total + room <= self.capacity:
                break
            self._drop(e)
            total -= e.nbytes


class Reader(Protocol):
    """A model with a prefix cache (`LocalCausalLM`)."""

    prefix_cache: PrefixCache

    def new_state(self, ids: list[int]) -> SeqState: ...


def start_state(
    lm: Reader, ids: list[int], *, budget: int = 0, mass_key: Hashable | None = None
) -> tuple[SeqState, int]:
    """A state over `ids` for a new generation, starting from the longest prefix this model
    has cached (a private copy), and how many of `ids` that prefix covers. `budget`: the
    bytes the cache may keep (0: no cache, a fresh state); `mass_key`: the signal settings
    a draft reads grounding under (its cached rollout mass must match them)."""
    if budget != lm.prefix_cache.capacity:
        lm.prefix_cache.resize(budget)
    hit = lm.prefix_cache.lookup(ids, mass_key) if budget > 0 else None
    if hit is None:
        return lm.new_state(ids), 0
    state = SeqState(ids=list(ids), cache=hit.cache, fed=hit.length, mass=hit.mass)
    state.next_logits, state.next_hidden = hit.logits, hit.hidden
    return state, hit.length


def keep_state(
    lm: Reader,
    state: SeqState,
    *,
    mass_key: Hashable | None = None,
    mass_valid: int | None = None,
) -> None:
    """Offer what `state` read to the prefix cache; the state is handed over (its owner is
    done with it). Its fed ids are kept, with the next logits where they follow the last."""
    if state.fed <= 0 or lm.prefix_cache.capacity <= 0:
        return
    whole = state.fed == len(state.ids)
    mass = None if state.mass is None else [m[: state.fed] for m in state.mass]
    lm.prefix_cache.offer(
        state.ids[: state.fed],
        state.cache,
        logits=state.next_logits if whole else None,
        hidden=state.next_hidden if whole else None,
        mass=mass,
        mass_key=mass_key if mass is not None else None,
        mass_valid=mass_valid,
    )
