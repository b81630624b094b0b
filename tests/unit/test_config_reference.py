"""docs/concepts.md's configuration reference lists every `SpecGuardConfig` field with its
default and description as the code has them: the table cannot drift from the config."""

from pathlib import Path

from specguard_integrations.config import SpecGuardConfig

PAGE = Path(__file__).resolve().parents[2] / "docs" / "concepts.md"


def test_the_reference_table_is_the_config():
    text = PAGE.read_text()
    table = text[text.index("| field | default | description |") :].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        name, default, description = (c.strip() for c in line.strip("|").split(" | ", 2))
        rows[name.strip("`")] = (default.strip("`"), description)
    assert set(rows) == set(SpecGuardConfig.model_fields), "rows for fields that do not exist"
    for name, field in SpecGuardConfig.model_fields.items():
        assert name in rows, f"docs/concepts.md has no row for {name}"
        default, description = rows[name]
        assert default == repr(field.default), name
        assert description == (field.description or "").replace("|", "/"), name


def test_the_no_speculation_ablation_is_the_bundled_config():
    """docs/bench/no_speculation.json (benchmark method `config:no_speculation`) differs from the
    bundled config in `target_speculation` alone, so a recalibration cannot leave it behind."""
    import json

    root = Path(__file__).resolve().parents[2]
    bundled = json.loads((root / "specguard_integrations/assets/specguard.json").read_text())
    ablation = json.loads((root / "docs/bench/no_speculation.json").read_text())
    assert ablation["config"]["target_speculation"] == 0 != bundled["config"]["target_speculation"]
    assert {**ablation["config"], "target_speculation": None} == {
        **bundled["config"],
        "target_speculation": None,
    }
