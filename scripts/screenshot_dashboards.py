"""Screenshot every experiment's TensorBoard dashboard in headless Chromium, as a new user would first see it.

For each experiment the script runs it (into a temporary --logdir unless --logdir is given), reads the
``tensorboard --logdir ...`` line and the link the script printed, starts a real ``tensorboard`` on 127.0.0.1,
opens the link in headless Chromium and saves what the browser shows:

    docs/dashboards/<experiment>.png                 the printed link (TIME SERIES with the key charts pinned, or
                                                     CUSTOM SCALARS where one chart says it all)
    docs/dashboards/<experiment>_time_series.png     TIME SERIES, when the link opens another tab
    docs/dashboards/<experiment>_custom_scalars.png  CUSTOM SCALARS: the experiment's layout, key chart first
    docs/dashboards/<experiment>_hparams.png         HPARAMS: the columns that vary, ticked

    python scripts/screenshot_dashboards.py                      # every experiment, about 3 minutes on 2 cores
    python scripts/screenshot_dashboards.py sweep xor --out /tmp/shots

Needs Chromium (Debian: ``apt-get install -y chromium``) and nothing else: the browser is driven through the Chrome
DevTools Protocol over a websocket written with the standard library. Outside the test suite on purpose: it takes
minutes and needs a browser. Look at the images: each dashboard must open on its experiment's point.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The experiments and the flags of the runs shown (the defaults, cut where a default run takes long).
EXPERIMENTS = {
    "learning_modes": [],
    "sweep": ["--run", "shot"],
    "xor": [],
    "softmax_outputs": [],
    "linear_collapse": [],
    "hidden_layers": [],
    "gradient_noise": [],
}
QUICK = {  # --quick: seconds each, to check the script itself
    "learning_modes": ["--epochs", "3"],
    "sweep": ["--run", "shot", "--seeds", "4", "--epochs", "100"],
    "xor": ["--seeds", "3", "--epochs-mlp", "500"],
    "softmax_outputs": ["--epochs", "5"],
    "linear_collapse": ["--seeds", "2", "--epochs", "100"],
    "hidden_layers": ["--epochs", "600"],
    "gradient_noise": ["--members", "40", "--epochs", "300"],
}
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------------------------------- the runs
def run_experiment(name: str, logdir: Path, quick: bool) -> tuple:
    """Run ``python -m experiments.<name>`` into logdir; returns (the --logdir it printed, the link it printed)."""
    args = [sys.executable, "-m", f"experiments.{name}", "--logdir", str(logdir),
            *(QUICK if quick else EXPERIMENTS)[name]]
    print(f"$ {' '.join(args[1:])}", flush=True)
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    command = re.search(r"tensorboard(?:\.main)? --logdir (\S+)", done.stdout)
    link = re.search(r"then (http://\S+)", done.stdout)
    if not command or not link:
        raise SystemExit(f"{name} printed no `tensorboard --logdir DIR` line or no link:\n{done.stdout[-2000:]}")
    return Path(command.group(1)), link.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tensorboard(logdir: Path, tmp: Path):
    """A real tensorboard on 127.0.0.1 serving logdir; yields its port once it answers."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
                               "127.0.0.1", "--port", str(port), "--load_fast=false"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, TMPDIR=str(tmp)))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with _NO_PROXY.open(f"http://127.0.0.1:{port}/data/runs", timeout=2) as answer:
                    if json.loads(answer.read()):
                        break
            time.sleep(0.5)
        else:
            raise SystemExit(f"tensorboard did not serve {logdir} within 60 s")
        time.sleep(2)  # the first reload reads every event file
        yield port
    finally:
        server.kill()
        server.wait()


# ---------------------------------------------------------------------------------------------------- the browser
class Browser:
    """Headless Chromium driven over the Chrome DevTools Protocol (a websocket; the standard library only)."""

    def __init__(self, width: int, height: int, tmp: Path):
        exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
        if exe is None:
            raise SystemExit("needs Chromium: apt-get install -y chromium")
        profile = tmp / "chromium-profile"
        self.process = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("Chromium did not start its DevTools endpoint")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with _NO_PROXY.open(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
            page = next(t for t in json.loads(answer.read()) if t["type"] == "page")
        self.socket = _websocket(page["webSocketDebuggerUrl"])
        self.next_id = 0
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def call(self, method: str, **params):
        self.next_id += 1
        _send(self.socket, json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(_receive(self.socket))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, url: str, settle: float) -> None:
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        while self.evaluate("document.readyState") != "complete" and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(settle)  # TensorBoard fetches its data and draws the charts after the page has loaded

    def click(self, label: str, settle: float = 1.0) -> bool:
        """Click the button whose aria-label is ``label``; False when there is none."""
        found = self.evaluate(f"(b => b ? (b.click(), true) : false)"
                              f"(document.querySelector('button[aria-label={json.dumps(label)}]'))")
        time.sleep(settle)
        return bool(found)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"  wrote {path}", flush=True)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.close()
        self.process.kill()
        self.process.wait()


def _websocket(url: str) -> socket.socket:
    match = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
    host, port, path = match.group(1), int(match.group(2)), match.group(3)
    sock = socket.create_connection((host, port), timeout=60)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(4096)
    if b" 101 " not in reply.split(b"\r\n", 1)[0]:
        raise SystemExit(f"Chromium refused the DevTools websocket: {reply[:200]!r}")
    return sock


def _send(sock: socket.socket, text: str) -> None:
    payload, mask = text.encode(), os.urandom(4)
    n = len(payload)
    header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                              bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                              bytes([0x80 | 127]) + struct.pack(">Q", n))
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def _receive(sock: socket.socket) -> str:
    """One text message (its frames joined); the server's frames are not masked."""
    def exactly(n):
        buffer = io.BytesIO()
        while buffer.tell() < n:
            chunk = sock.recv(min(1 << 20, n - buffer.tell()))
            if not chunk:
                raise ConnectionError("Chromium closed the DevTools websocket")
            buffer.write(chunk)
        return buffer.getvalue()

    parts = []
    while True:
        first, second = exactly(2)
        n = second & 0x7F
        if n == 126:
            n = struct.unpack(">H", exactly(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", exactly(8))[0]
        parts.append(exactly(n))
        if first & 0x80:  # FIN
            return b"".join(parts).decode()


# ---------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                        help=f"which to show (default: all of {list(EXPERIMENTS)})")
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboards"), help="folder of the PNG files")
    parser.add_argument("--logdir", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="short runs, to check the script itself")
    parser.add_argument("--size", type=int, nargs=2, default=[1400, 900], metavar=("W", "H"),
                        help="browser window in pixels")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds TensorBoard gets to draw a page")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.experiments) - set(EXPERIMENTS))
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; choose from {list(EXPERIMENTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dashboards-") as tmp:
        tmp = Path(tmp)
        logdir = Path(args.logdir) if args.logdir else tmp / "runs"
        browser = Browser(*args.size, tmp)
        try:
            for name in args.experiments or list(EXPERIMENTS):
                run_dir, link = run_experiment(name, logdir, args.quick)
                with tensorboard(run_dir, tmp) as port:
                    base = f"http://127.0.0.1:{port}"
                    link = re.sub(r"^http://[^/]+", base, link)
                    pages = {name: link}  # the printed link first, then the tabs it does not open on
                    for tab, suffix in (("timeseries", "time_series"), ("custom_scalars", "custom_scalars"),
                                        ("hparams", "hparams")):
                        if not link.endswith(f"#{tab}"):
                            pages[f"{name}_{suffix}"] = re.sub(r"#\w+$", "", link) + f"#{tab}"
                    for shot, url in pages.items():
                        browser.open(url, args.settle)
                        if url.endswith("#timeseries"):
                            browser.click("Close side pane")  # TIME SERIES' settings: room for the charts
                        browser.screenshot(out / f"{shot}.png")
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
