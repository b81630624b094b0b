"""langchain-tests conformance suites, offline, on the bundled pair."""

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

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
    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # the unit suite adds api_key="test"; a local model pair has no credentials, and
        # ChatSpecGuard rejects the name (temperature, max_tokens, timeout, stop and
        # max_retries are accepted and mapped)
        params = super().standard_chat_model_params
        del params["api_key"]
        return params


# What the bundled pair's weights cannot do yet (docs/bundled-pair.md). The target learned to copy
# parameter names from an unseen tool schema (the structured-output tests pass since round 5), but
# not to fill a runnable-as-tool's `answer_style` from the conversation. The plumbing these tests
# exercise (forced calls, parsing, ids, invalid calls) is covered in
# tests/integration/test_langchain_tiny.py and tests/unit/test_chat.py. Strict xfails: they start
# failing the suite once the weights pass.
_WEAK_WEIGHTS = pytest.mark.xfail(
    strict=True,
    reason="bundled target does not yet fill every argument of an unseen runnable tool",
)


class TestChatSpecGuardIntegration(_Common, ChatModelIntegrationTests):
    @_WEAK_WEIGHTS
    def test_bind_runnables_as_tools(self, model: Any) -> None:
        super().test_bind_runnables_as_tools(model)

    @pytest.mark.xfail(
        strict=True,
        reason="bundled pair trained on ASCII tasks only: cannot copy CJK text into arguments",
    )
    def test_unicode_tool_call_integration(self, model: Any, *args: Any, **kwargs: Any) -> None:
        super().test_unicode_tool_call_integration(model, *args, **kwargs)
