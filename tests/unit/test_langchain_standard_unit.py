"""langchain-tests unit conformance suite (construction, parameters, binding; no generation)."""

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests
from standard_suite import Common


class TestChatSpecGuardUnit(Common, ChatModelUnitTests):
    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # the unit suite adds api_key="test"; a local model pair has no credentials, and
        # ChatSpecGuard rejects the name (temperature, max_tokens, timeout, stop and
        # max_retries are accepted and mapped)
        params = super().standard_chat_model_params
        del params["api_key"]
        return params
