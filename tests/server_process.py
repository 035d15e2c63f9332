"""Run `python -m pybonsai.server` as a subprocess on a free 127.0.0.1 port (for the server tests)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, model: Path, *args: str, api_key: Optional[str] = None, log: Path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        cmd = [sys.executable, "-m", "pybonsai.server", "-m", str(model), "--port", str(self.port),
               "--alias", "tiny", "--threads", "1", "--log-level", "warning", *args]
        if api_key:
            cmd += ["--api-key", api_key]
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        env.pop("PYBONSAI_API_KEY", None)
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer /health within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text("utf-8", errors="replace")

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def openai_client(server: ServerProcess, **kwargs):
    """The real `openai` client for `server` (no retries: the tests see every answer)."""
    import openai

    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.api_key or "unused", max_retries=0,
                         **{"timeout": 120, **kwargs})


@contextlib.contextmanager
def running_server(model: Path, log: Path, *args: str):
    """A ServerProcess for a module's tests; at the end SIGTERM must exit it with status 0."""
    srv = ServerProcess(model, *args, log=log)
    try:
        yield srv
    finally:
        status = srv.terminate()
        assert status == 0, srv.log()
