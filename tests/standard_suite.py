"""What both langchain-tests conformance suites share: the class under test and its settings."""

from typing import Any

from specguard_integrations import SpecGuardConfig
from specguard_integrations.assets import DEFAULT_CONFIG
from specguard_integrations.langchain import ChatSpecGuard

CONFIG = SpecGuardConfig.from_file(DEFAULT_CONFIG).merged(max_new_tokens=120)


# Suite tests that skip themselves, and why (langchain-tests reads these properties):
# - image / PDF / audio inputs and tool messages, Anthropic-format inputs: the models are text-only
#   causal LMs (content blocks other than text are rejected with a clear error);
# - json mode (`supports_json_mode`): structured output goes through a forced tool call instead;
# - model override: see `supports_model_override` below;
# - init from env / serdes: no credentials or endpoint to read from the environment, and the
#   class holds a loaded engine, so it is not marked serialisable;
# - VCR / stream-time tests: there is no network traffic to record.


class Common:
    @property
    def chat_model_class(self) -> type[ChatSpecGuard]:
        return ChatSpecGuard

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"config": CONFIG, "device": "cpu"}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supported_usage_metadata_details(self) -> dict:
        return {"invoke": [], "stream": []}

    @property
    def supports_model_override(self) -> bool:
        # A different model per call would mean loading another target; construct another
        # ChatSpecGuard instead. `_get_ls_params(model=...)` still honours the override.
        return False
