"""langchain-tests integration conformance suite, offline, on the bundled pair (the unit suite
is in tests/unit/test_langchain_standard_unit.py)."""

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from standard_suite import Common

# What the bundled pair's weights cannot do yet (docs/bundled-pair.md), as a strict xfail: it
# starts failing the suite once the weights pass. (A runnable-as-tool's every argument is filled
# since forced calls are sampled under the tool's schema: docs/structured-output.md.)


class TestChatSpecGuardIntegration(Common, ChatModelIntegrationTests):
    @pytest.mark.xfail(
        strict=True,
        reason="bundled pair trained on ASCII tasks only: cannot copy CJK text into arguments",
    )
    def test_unicode_tool_call_integration(self, model: Any, *args: Any, **kwargs: Any) -> None:
        super().test_unicode_tool_call_integration(model, *args, **kwargs)
