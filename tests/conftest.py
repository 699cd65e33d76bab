"""Tests run offline, with data and models cached in a temporary folder of their own."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def medlib_cache(tmp_path_factory):
    """Each test session builds its smoke data in its own cache, so nothing outside it is written."""
    if "MEDLIB_TEST_CACHE" in os.environ:
        os.environ["MEDLIB_CACHE"] = os.environ["MEDLIB_TEST_CACHE"]
    else:
        os.environ["MEDLIB_CACHE"] = str(tmp_path_factory.mktemp("medlib_cache"))
    yield os.environ["MEDLIB_CACHE"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Tests reach no network: only loopback (papermill's kernels talk over it) and local sockets."""
    import socket

    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")):
            return real_connect(self, address)
        raise RuntimeError(f"a test tried to reach the network: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
