"""`llmhost bench` sends the API key to llmhost's services, and to another URL only when asked."""

import pytest
from click.testing import CliRunner

from llmhost.cli.bench import key_for
from llmhost.cli.main import cli
from llmhost.errors import LlmhostError
from llmhost.verify.bench import runner

KEY = "k" * 40


@pytest.fixture
def sent_key(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The keys the stand-in run_bench was handed (it then stops the command)."""
    sent: list[object] = []

    def capture(url: str, **kwargs: object) -> None:
        sent.append(kwargs.get("api_key"))
        raise LlmhostError("stopped before any request")

    monkeypatch.setattr(runner, "run_bench", capture)
    return sent


def bench(tmp_path, *args: str) -> object:
    config = tmp_path / "llmhost.yaml"
    config.write_text(f"api_key: {KEY}\n")
    result = CliRunner().invoke(cli, ["--config", str(config), "bench", *args])
    return result


@pytest.mark.parametrize(("args", "expected"), [
    (("--url", "http://127.0.0.1:9/v1"), None),
    (("--url", "http://127.0.0.1:9/v1", "--send-key"), KEY),
])  # fmt: skip
def test_key_reaches_a_url_only_when_asked(tmp_path, sent_key, args, expected) -> None:
    result = bench(tmp_path, *args)
    assert "stopped before any request" in result.output
    assert sent_key == [expected]
    assert KEY not in result.output


def test_send_key_without_url_is_a_usage_error(tmp_path) -> None:
    result = bench(tmp_path, "--service", "llama-cpu", "--send-key")
    assert result.exit_code == 2 and "--send-key is for --url" in result.output
    assert KEY not in result.output


def test_key_for() -> None:
    assert key_for(KEY, service="llama-cpu", send_key=False) == KEY
    assert key_for(KEY, service=None, send_key=False) is None
    assert key_for(KEY, service=None, send_key=True) == KEY
    assert key_for(None, service="llama-cpu", send_key=False) is None
