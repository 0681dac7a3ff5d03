"""A small W3C WebDriver client: the OS's chromedriver drives a headless Chromium over HTTP
(urllib, no proxy). Only what the console's tests use."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from agent.broker import free_port

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class WebDriverError(AssertionError):
    pass


class Browser:
    """``with Browser(tmp) as b: b.get(url); b.js("return document.title")``."""

    def __init__(self, workdir: Path, width: int = 1280, height: int = 800, insecure_certs: bool = False):
        self.workdir = workdir
        self.size = (width, height)
        self.insecure_certs = insecure_certs  # a test's own self-signed TLS certificate is accepted
        self.proc: subprocess.Popen | None = None
        self.session = ""

    def __enter__(self) -> Browser:
        driver, chromium = shutil.which("chromedriver"), shutil.which("chromium")
        assert driver and chromium, "chromium and chromedriver are needed (make system-deps installs them)"
        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.workdir / "chromedriver.log", "ab")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen([driver, f"--port={self.port}"], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self._call("GET", "/status")["ready"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "chromedriver did not answer"
            time.sleep(0.1)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-proxy-server",
                f"--window-size={self.size[0]},{self.size[1]}", f"--user-data-dir={self.workdir / 'profile'}"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "acceptInsecureCerts": self.insecure_certs,
                                                 "goog:chromeOptions": {"binary": chromium, "args": args}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.session:
                self._call("DELETE", f"/session/{self.session}")
        finally:
            if self.proc is not None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            self._log.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with _OPENER.open(req, timeout=60) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as exc:
            raise WebDriverError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None

    def _s(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self._s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css: str) -> str:
        return self._s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css: str) -> None:
        self._s("POST", f"/element/{self.find(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        element = self.find(css)
        self._s("POST", f"/element/{element}/clear", {})
        self._s("POST", f"/element/{element}/value", {"text": text})

    def text(self, css: str) -> str:
        return self._s("GET", f"/element/{self.find(css)}/text")

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._s("GET", "/screenshot")))
        return path

    def wait(self, script: str, timeout: float = 20.0, *args: Any) -> Any:
        """Poll ``script`` (JS returning a value) every 50 ms until it is truthy; return it."""
        deadline = time.monotonic() + timeout
        while not (value := self.js(script, *args)):
            if time.monotonic() > deadline:
                raise WebDriverError(f"not within {timeout} s: {script}")
            time.sleep(0.05)
        return value
