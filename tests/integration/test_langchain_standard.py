"""langchain-tests integration conformance suite, offline, on the bundled pair (the unit suite
is in tests/unit/test_langchain_standard_unit.py)."""

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from standard_suite import Common

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


class TestChatSpecGuardIntegration(Common, ChatModelIntegrationTests):
    @_WEAK_WEIGHTS
    def test_bind_runnables_as_tools(self, model: Any) -> None:
        super().test_bind_runnables_as_tools(model)

    @pytest.mark.xfail(
        strict=True,
        reason="bundled pair trained on ASCII tasks only: cannot copy CJK text into arguments",
    )
    def test_unicode_tool_call_integration(self, model: Any, *args: Any, **kwargs: Any) -> None:
        super().test_unicode_tool_call_integration(model, *args, **kwargs)
