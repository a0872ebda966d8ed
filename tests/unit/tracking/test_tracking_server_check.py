"""A tracking server that is down or not MLflow is one line naming MLFLOW_TRACKING_URI, before any work: MLflow's
own client would retry it for minutes, after the run's data and fit stages."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.errors import TrackingError
from app.tracking.backend import check_tracking_location, ping_tracking_server


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/mlflow/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.HTTPServer]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_healthy_server_passes_and_credentials_stay_out_of_the_request(server: http.server.HTTPServer) -> None:
    port = server.server_address[1]
    ping_tracking_server(f"http://user:secret@127.0.0.1:{port}/mlflow")
    check_tracking_location(f"http://127.0.0.1:{port}/mlflow/")


def test_a_server_that_is_not_healthy_is_refused(server: http.server.HTTPServer) -> None:
    port = server.server_address[1]
    with pytest.raises(TrackingError, match=r"HTTP 404 .*MLFLOW_TRACKING_URI") as info:
        ping_tracking_server(f"http://u:secret@127.0.0.1:{port}/elsewhere")
    assert "secret" not in str(info.value)


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:  # accepts connections, never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with pytest.raises(TrackingError, match=r"no answer within 0.5s"):
            ping_tracking_server(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.5)


def test_qtrain_run_against_a_dead_server_stops_before_any_work(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_"))}
    env |= {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_free_port()}", "QTRAIN_HOME": str(tmp_path / ".qtrain")}
    for args in ([], ["-m", "seed=0,1", "hydra/launcher=celery"]):
        out = subprocess.run([str(Path(sys.executable).parent / "qtrain"), "run", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 2, out.stderr[-2000:]
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: tracking server http://127.0.0.1:"), out.stderr
        assert "Connection refused" in lines[0] and "MLFLOW_TRACKING_URI" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no sample market, no sweep directory, no tracking DB
