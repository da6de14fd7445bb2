"""The shared OpenAI-compatible client: base urls and API keys (its retries, health check and usage
counts are exercised against fake servers by the MGLD annotator and judge tests)."""

import pytest

from eeca.llm_client import FatalChatError, normalize_base_url, resolve_api_key


@pytest.mark.parametrize("url, expected", [
    (None, "https://api.openai.com/v1"),
    ("http://localhost:11434", "http://localhost:11434/v1"),
    ("http://localhost:11434/", "http://localhost:11434/v1"),
    ("localhost:8000", "http://localhost:8000/v1"),
    ("http://gpu1:8000/v1", "http://gpu1:8000/v1"),
    ("http://gpu1:8000/v1/", "http://gpu1:8000/v1"),
    ("http://gpu1:8000/v1/chat/completions", "http://gpu1:8000/v1"),
    ("https://example.org/openai/v1", "https://example.org/openai/v1"),
])
def test_base_url_normalisation(url, expected):
    assert normalize_base_url(url) == expected


def test_api_key_only_from_environment(monkeypatch):
    monkeypatch.delenv("EECA_TEST_KEY", raising=False)
    assert resolve_api_key("http://localhost:8000/v1", "EECA_TEST_KEY") == "no-key-needed"
    with pytest.raises(FatalChatError, match="set the environment variable EECA_TEST_KEY"):
        resolve_api_key("https://api.openai.com/v1", "EECA_TEST_KEY")
    monkeypatch.setenv("EECA_TEST_KEY", "sk-123")
    assert resolve_api_key("https://api.openai.com/v1", "EECA_TEST_KEY") == "sk-123"
