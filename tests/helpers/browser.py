"""Headless Chromium through chromedriver's WebDriver protocol (no Python WebDriver package needed)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from typing import Any

import pytest

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def require_chromium() -> str:
    driver = shutil.which("chromedriver")
    if driver is None or shutil.which("chromium") is None:
        pytest.skip("headless Chromium not installed (Debian packages chromium and chromium-driver)")
    return driver


class Browser:
    """One headless Chromium session; ``call`` speaks WebDriver, the helpers cover what tests need."""

    def __init__(self) -> None:
        driver = require_chromium()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.session = ""

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        request = urllib.request.Request(self.base + path, method=method, headers={"Content-Type": "application/json"},
                                         data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["value"]

    def __enter__(self) -> Browser:
        for _ in range(200):
            try:
                self.call("GET", "/status")
                break
            except OSError:
                time.sleep(0.05)
        options = {"args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--window-size=1280,900"]}
        self.session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": options}}})["sessionId"]
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.session:
                self.call("DELETE", f"/session/{self.session}")
        finally:
            self.process.terminate()
            self.process.wait(timeout=30)

    def go(self, url: str) -> None:
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        return self.call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": list(args)})

    def element(self, css: str) -> str:
        return self.call("POST", f"/session/{self.session}/element", {"using": "css selector", "value": css})[ELEMENT]

    def type(self, css: str, text: str) -> None:
        """Keys into an element; for ``<input type=file>`` the text is the file's path (an upload)."""
        self.call("POST", f"/session/{self.session}/element/{self.element(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self.call("POST", f"/session/{self.session}/element/{self.element(css)}/click", {})

    def wait_for(self, script: str, timeout: float = 120.0) -> Any:
        """Poll ``script`` (a JavaScript expression) until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.run(f"return {script};")
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {script}")

    def screenshot(self) -> bytes:
        import base64

        return base64.b64decode(self.call("GET", f"/session/{self.session}/screenshot"))
