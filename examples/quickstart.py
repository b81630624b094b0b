"""SpecGuard on the bundled offline pair: one problem, each step with its verdict.

.venv/bin/python examples/quickstart.py
"""

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.assets import DEFAULT_CONFIG, bundled_pair


def main() -> None:
    draft_dir, target_dir = bundled_pair()  # or any Hugging Face model ids / directories
    engine = SpecGuard.from_pretrained(str(draft_dir), str(target_dir), device="cpu")
    config = SpecGuardConfig.from_file(DEFAULT_CONFIG)
    result = engine.generate("Question: Solve 7x + 4 = 60 for x.\n", config=config)
    for step in result.steps:
        print(
            f"{step.source:>6}  g={step.grounding:.3f}  l={step.confidence:.2f}  "
            f"r={step.fused:.3f} (tau {step.threshold})  {step.decision:>6}  {step.text!r}"
        )
    print(result.text)
    print(result.summary())


if __name__ == "__main__":
    main()
