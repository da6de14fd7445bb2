"""Fixtures for the MGLD tests (helpers in mgld_world.py)."""

import pytest
from mgld_world import AnnotatorServer, make_world


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


@pytest.fixture
def fake_openai():
    with AnnotatorServer() as server:
        yield server
