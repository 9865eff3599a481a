"""A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe`, for page tests.

The pipe transport needs no websocket library and no port: Chromium reads NUL-terminated JSON
commands on fd 3 and writes replies and events on fd 4, which `sh` wires to our stdin/stdout.
`ensure_chromium` installs Debian's `chromium` when it is absent (the HTML test needs a browser).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe", "--hide-scrollbars"]
BINARIES = ("chromium", "chromium-browser")


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, BINARIES) if path), None)


def ensure_chromium() -> tuple[str | None, str]:
    """(path to chromium, "") or (None, why it could not be installed)."""
    found = find_chromium()
    if found:
        return found, ""
    apt = shutil.which("apt-get")
    if apt is None:
        return None, "chromium is not installed and there is no apt-get to install it"
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None:
        return None, "chromium is not installed; installing it needs root (or passwordless sudo)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    last_line = ""
    for attempt in ([apt, "install", "-y", "--no-install-recommends", "chromium"], [apt, "update"],
                    [apt, "install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run(prefix + attempt, capture_output=True, text=True, env=env, timeout=900)
        last_line = ((done.stderr or done.stdout).strip().splitlines() or [""])[-1]
        found = find_chromium()
        if found:
            return found, ""
    return None, f"chromium is not installed and `apt-get install chromium` failed: {last_line}"


class Browser:
    """One headless Chromium with one page; `call` sends a command, `events` collects the rest."""

    def __init__(self, binary: str, profile: Path, width: int = 1400, height: int = 1000):
        command = [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(["sh", "-c", 'exec "$@" 3<&0 4>&1 </dev/null >/dev/null', "sh", *command],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None
        targets = self.call("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                 session=False)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: bool = True, timeout: float = 60) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        self.proc.stdin.write(json.dumps(message).encode() + b"\0")
        self.proc.stdin.flush()
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        for index, seen in enumerate(self.events):
            if seen.get("method") == event:
                return self.events.pop(index)
        while True:
            message = self._read(timeout)
            if message.get("method") == event:
                return message
            self.events.append(message)

    def open(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far, one line each."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = (details.get("exception") or {}).get("description") or details.get("text", "")
                out.append(f"exception: {text.splitlines()[0] if text else details}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
                out.append(f"console.{params['type']}: " + json.dumps(params.get("args", []))[:300])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                entry = params["entry"]
                out.append(f"log {entry['level']}: {entry.get('text', '')} {entry.get('url', '')}".strip())
        return out

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close", session=False, timeout=10)
        except (RuntimeError, TimeoutError, BrokenPipeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
