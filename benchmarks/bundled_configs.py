"""SpecGuard settings on the bundled pair against each model alone, same prompts, one run.

    .venv/bin/python benchmarks/bundled_configs.py

Prints accuracy, wall time and target-call rate on 15 held-out items per family. A stopgap until
the benchmark harness (`specguard bench`) exists.
"""

import time

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.assets import bundled_pair
from specguard_integrations.registry import load_lm
from specguard_integrations.tasks import FAMILIES, make_split
from specguard_integrations.tasks.runner import solve_plain, solve_specguard

d, t = bundled_pair()
D, T = load_lm(str(d), device="cpu"), load_lm(str(t), device="cpu")
eng = SpecGuard(D, T)
N = 15
items = [i for f in FAMILIES for i in make_split(f, "test", N)]
base = dict(
    max_step_tokens=48,
    max_new_tokens=160,
    confidence_bounds=(-2.0, 0.0),
    grounding_bounds=(0.45, 0.9),
)
cfgs = {
    "paper b0.3 t0.7 k1": SpecGuardConfig.greedy(beta=0.3, tau=0.7, **base),
    "b0.7 t0.8 k1": SpecGuardConfig.greedy(beta=0.7, tau=0.8, **base),
    "conf-only t0.9 k1": SpecGuardConfig.greedy(beta=1.0, tau=0.9, **base),
    "conf-only t0.9 k4": SpecGuardConfig(k=4, beta=1.0, tau=0.9, **base),
}
t0 = time.perf_counter()
tacc = sum(solve_plain(T, i).correct for i in items)
tt = time.perf_counter() - t0
t0 = time.perf_counter()
dacc = sum(solve_plain(D, i).correct for i in items)
dt = time.perf_counter() - t0
print(f"target-only acc {tacc}/{len(items)} {tt:.1f}s; draft-only {dacc} {dt:.1f}s")
for name, c in cfgs.items():
    t0 = time.perf_counter()
    sol = [solve_specguard(eng, i, c) for i in items]
    st = time.perf_counter() - t0
    recs = [r for s in sol for r in s.records]
    rate = sum(r.source == "target" for r in recs) / len(recs)
    ok = sum(s.correct for s in sol)
    print(f"{name}: acc {ok}/{len(items)} time {st:.1f}s ({st / tt:.2f}x) target-call {rate:.2f}")
