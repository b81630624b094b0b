import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# parametrised conformance tests the provisional bundled weights fail (reason in
# tests/integration/test_langchain_standard.py)
_WEAK_WEIGHTS = {
    "TestChatSpecGuardIntegration::test_structured_output[pydantic]",
    "TestChatSpecGuardIntegration::test_structured_output_async[pydantic]",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
        if any(item.nodeid.endswith(n) for n in _WEAK_WEIGHTS):
            item.add_marker(
                pytest.mark.xfail(
                    strict=True,
                    reason="bundled target does not yet copy arguments for unseen tool schemas",
                )
            )
