"""A real `tensorboard` server on 127.0.0.1 for tests, and a JSON client for its HTTP data API."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, body: dict = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with _NO_PROXY.open(request, timeout=5) as response:
        return json.loads(response.read().decode())


def scalars(base: str, run: str, tag: str) -> list:
    """[(step, value)] of one series, through /data/plugin/scalars/scalars (which serves [wall_time, step, value])."""
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    return [(step, value) for _, step, value in get_json(f"{base}/data/plugin/scalars/scalars?{query}")]


@contextlib.contextmanager
def tensorboard_server(logdir, tmp_path, ready, timeout: float = 60.0):
    """Start `python -m tensorboard.main` on a free port of 127.0.0.1 and yield its base URL once
    ``ready(runs, tags)`` holds for /data/runs and /data/plugin/scalars/tags. The server is always killed."""
    env = dict(os.environ, TMPDIR=str(tmp_path))  # tensorboard's .tensorboard-info files go to the test's tmp
    output = ""
    for _attempt in range(3):  # the free port may be taken between finding it and tensorboard binding it
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
             "--port", str(port), "--load_fast=false", "--reload_interval", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )
        try:
            deadline = time.monotonic() + timeout
            is_ready = False
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    if ready(get_json(f"{base}/data/runs"), get_json(f"{base}/data/plugin/scalars/tags")):
                        is_ready = True
                        break
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
                time.sleep(0.25)
            if server.poll() is not None:
                continue  # exited (port taken): try another port
            if not is_ready:
                raise AssertionError(f"tensorboard on {base} did not serve the expected runs within {timeout} s")
            yield base
            return
        finally:
            server.kill()
            output = server.communicate(timeout=10)[0].decode(errors="replace")
    raise AssertionError(f"tensorboard did not start on 127.0.0.1 in 3 attempts; last output:\n{output}")
