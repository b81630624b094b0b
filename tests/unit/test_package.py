import subprocess
import sys

import specguard_integrations
import specguard_integrations.engine


def test_public_surface_is_pinned():
    assert sorted(specguard_integrations.__all__) == [
        "Cancelled",
        "ConfigError",
        "Constraint",
        "DeadlinePassed",
        "EndpointDraft",
        "EndpointError",
        "EndpointRejected",
        "EndpointReplyError",
        "EndpointTarget",
        "EndpointTimeout",
        "EndpointUnreachable",
        "GenerationResult",
        "GenerationTimeout",
        "InvalidInputError",
        "InvalidTypeError",
        "LocalCausalLM",
        "MissingAssetError",
        "MissingDependencyError",
        "ModelError",
        "PhaseTimes",
        "SpecGuard",
        "SpecGuardConfig",
        "SpecGuardError",
        "StateError",
        "StepRecord",
        "StepStream",
        "__version__",
    ]
    assert sorted(specguard_integrations.engine.__all__) == [
        "DraftModel",
        "FusionJudge",
        "Judge",
        "RewardModelJudge",
        "SpecGuardEngine",
        "StepStream",
        "TargetModel",
    ]
    import inspect

    from specguard_integrations.engine.loop import SpecGuardEngine
    from specguard_integrations.registry import SpecGuard as LoadingSpecGuard

    # lazy names resolve to the objects their modules define; the package's SpecGuard is the
    # method's, with loading and the step scheduler
    assert specguard_integrations.SpecGuard is LoadingSpecGuard
    assert issubclass(LoadingSpecGuard, SpecGuardEngine)
    for pkg in (specguard_integrations, specguard_integrations.engine):
        for name in pkg.__all__:
            obj = getattr(pkg, name)
            assert name == "__version__" or inspect.isclass(obj), name


def test_import_and_help_do_not_import_torch_or_frameworks():
    code = (
        "import sys, specguard_integrations, specguard_integrations.cli as c\n"
        "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'langchain_core', 'llama_index')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_cli_reports_bad_config_file(tmp_path, capsys):
    from specguard_integrations.cli import main

    bad = tmp_path / "c.json"
    bad.write_text('{"tau": -1}')
    assert main(["demo", "--config", str(bad)]) == 2
    assert "tau" in capsys.readouterr().err


BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_each_framework_works_without_the_other():
    """The extras are independent: without llama-index, LangChain works and the LlamaIndex class
    names the [llama-index] extra; the reverse for LangChain."""
    code = BLOCK.format(blocked="llama_index") + (
        "from specguard_integrations.langchain import ChatSpecGuard\n"
        "llm = ChatSpecGuard(max_tokens=4, device='cpu')\n"
        "assert llm.invoke('Question: What is 2 + 2?\\n').response_metadata['specguard_steps']\n"
        "try:\n"
        "    from specguard_integrations.llama_index import SpecGuardLLM\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert "needs the [llama-index] extra" in out.stdout
    assert "pip install 'specguard-integrations[llama-index]'" in out.stdout
    code = BLOCK.format(blocked="langchain_core") + (
        "from specguard_integrations.llama_index import SpecGuardLLM\n"
        "assert SpecGuardLLM(max_tokens=4, device='cpu').complete('2 + 2 =').text is not None\n"
        "from specguard_integrations.langchain import ChatSpecGuard\n"
    )
    out = _run(code)
    assert out.returncode != 0 and "needs the [langchain] extra" in out.stderr
    code = BLOCK.format(blocked="starlette") + (
        "from specguard_integrations.server import create_app\ncreate_app(None)\n"
    )
    out = _run(code)
    assert out.returncode != 0 and "create_app needs the [serve] extra" in out.stderr
