"""langchain-tests conformance suites, offline, on the bundled pair."""

from typing import Any

from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from specguard_integrations import SpecGuardConfig
from specguard_integrations.assets import DEFAULT_CONFIG
from specguard_integrations.langchain import ChatSpecGuard

CONFIG = SpecGuardConfig.from_file(DEFAULT_CONFIG).merged(max_new_tokens=120)


class _Common:
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


class TestChatSpecGuardUnit(_Common, ChatModelUnitTests):
    pass


class TestChatSpecGuardIntegration(_Common, ChatModelIntegrationTests):
    pass
