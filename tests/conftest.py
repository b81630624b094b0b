import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        help="where the tests that take a `device` run their models (cuda on a GPU machine:"
        " benchmarks/gpu_check.sh)",
    )


@pytest.fixture(scope="session")
def device(request) -> str:
    """The device of the tests that take one (``--device``; the CPU by default)."""
    return str(request.config.getoption("--device"))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
        if "/families/" in str(item.fspath):
            item.add_marker(pytest.mark.families)
        if "/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)
        if "/docs/" in str(item.fspath):
            item.add_marker(pytest.mark.docs)
