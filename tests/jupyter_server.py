"""A Jupyter server (JupyterLab included) for tests: on 127.0.0.1, a free port, no token, with
the project's pre-save hook installed the way scripts/install.sh installs it (into a temporary
Jupyter configuration folder instead of the environment's)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from hiva_lib import jupyter_guard

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url: str, method: str = "GET", body: dict | None = None) -> dict | list:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}")


@contextmanager
def jupyter(root_dir: Path, tmp: Path, app: str = "jupyter_server", **env: str):
    """``python -m <app>`` serving ``root_dir`` (``env``: more environment variables); yields
    its base URL."""
    prefix = tmp / "jupyter_prefix"
    jupyter_guard.install(prefix=prefix, repo=root_dir)
    port = _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(prefix / "etc" / "jupyter"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "PYTHONPATH": str(root_dir), **env}
    log = (tmp / f"{app}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", app, "--no-browser", f"--ServerApp.port={port}",
         "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
         "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root_dir}",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                api(f"{url}/api/status")
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError((tmp / f"{app}.log").read_text()) from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
