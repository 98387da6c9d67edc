"""wandb: online falls back to offline, with a warning that says why, whenever online logging cannot work."""
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from omegaconf import OmegaConf

from orthonoise.run import wandb_run
from orthonoise.run.wandb_run import logging_mode, start_wandb


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def serve(handler_body):
    """A local HTTP server on a free port whose every POST is answered by handler_body(path, body) ->
    (status, bytes); returns (base url, server)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            status, payload = handler_body(self.path, self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


@pytest.fixture
def server(monkeypatch, no_credentials):
    """Start a server answering with `reply`, point WANDB_BASE_URL at it, with an API key set."""
    servers = []

    def start(reply):
        url, srv = serve(reply)
        servers.append(srv)
        monkeypatch.setenv("WANDB_BASE_URL", url)
        monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
        return url

    yield start
    for srv in servers:
        srv.shutdown()


GRAPHQL_OK = lambda path, body: (200, json.dumps({"data": {"viewer": {"id": "u1"}}}).encode())  # noqa: E731


def test_online_without_credentials_logs_offline_with_a_warning(no_credentials, caplog):
    with caplog.at_level(logging.WARNING):
        assert logging_mode("online") == "offline"
    assert "no wandb credentials" in caplog.text and "wandb sync" in caplog.text


def test_a_w_and_b_server_at_its_own_scheme_and_port_is_online(server):
    seen = []
    server(lambda path, body: (seen.append((path, json.loads(body))), GRAPHQL_OK(path, body))[1])
    assert logging_mode("online") == "online"
    assert seen[0][0] == "/graphql" and "viewer" in seen[0][1]["query"]


def test_a_netrc_login_counts_as_credentials(server, tmp_path, monkeypatch):
    server(GRAPHQL_OK)
    monkeypatch.delenv("WANDB_API_KEY")
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine 127.0.0.1\n  login user\n  password abc123\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert logging_mode("online") == "online"


@pytest.mark.parametrize("reply,why", [
    (lambda path, body: (200, b"<html>hello</html>"), "answered, but not as a W&B server"),
    (lambda path, body: (200, b'["not", "graphql"]'), "answered, but not as a W&B server"),
    (lambda path, body: (404, b"no such page"), "answered HTTP 404 to a W&B request"),
    (lambda path, body: (401, b"bad key"), "rejected the API key (HTTP 401)"),
])
def test_something_that_is_not_a_w_and_b_server_logs_offline(server, caplog, reply, why):
    url = server(reply)
    with caplog.at_level(logging.WARNING):
        assert logging_mode("online") == "offline"
    assert f"{url} {why}" in caplog.text and "logging offline instead" in caplog.text


def test_a_port_that_accepts_tcp_and_says_nothing_logs_offline(no_credentials, monkeypatch, caplog):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts connections (the kernel does), never answers
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setattr(wandb_run, "PROBE_TIMEOUT_S", 0.5)
    with caplog.at_level(logging.WARNING):
        assert logging_mode("online") == "offline"
    listener.close()
    assert "cannot be reached or did not answer" in caplog.text


def test_a_server_of_another_protocol_logs_offline(no_credentials, monkeypatch, caplog):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def banner():  # what an ssh server says to anyone who connects
        conn, _ = listener.accept()
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
        while conn.recv(1 << 16):  # and, as ssh does, waits for more until the client hangs up
            pass
        conn.close()

    threading.Thread(target=banner, daemon=True).start()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    with caplog.at_level(logging.WARNING):
        assert logging_mode("online") == "offline"
    listener.close()
    assert "answered, but not as a W&B server (BadStatusLine)" in caplog.text


def test_a_closed_port_logs_offline(no_credentials, monkeypatch, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    with caplog.at_level(logging.WARNING):
        assert logging_mode("online") == "offline"
    assert f"http://127.0.0.1:{port} cannot be reached" in caplog.text


def test_a_failing_wandb_init_falls_back_to_an_offline_run(server, tmp_path, monkeypatch, caplog):
    import wandb

    server(GRAPHQL_OK)  # the probe passes; wandb.init online then fails as against a broken server
    real_init = wandb.init

    def init(**kwargs):
        if kwargs["mode"] == "online":
            raise wandb.errors.CommError("Error communicating with wandb process")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    cfg = OmegaConf.create({"logger": {"mode": "online", "project": "p", "entity": None, "group": None},
                            "phase": None, "optimizer": {}, "seed": 0, "tags": [], "trainer": {"max_steps": 1}})
    with caplog.at_level(logging.WARNING):
        run = start_wandb(cfg, tmp_path, {})
    try:
        assert run.settings.mode == "offline"
        assert "wandb.init failed (CommError" in caplog.text
    finally:
        run.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_other_modes_are_left_alone(no_credentials, mode):
    assert logging_mode(mode) == mode
