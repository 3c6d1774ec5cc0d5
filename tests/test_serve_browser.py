"""A real browser (Debian's chromium, headless) uploads a phantom on the page and reads the result.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: NUL-separated
JSON on file descriptors 3 and 4). That needs no websocket client, no chromedriver (whose version must
match the browser) and opens no extra port. The page is served by uvicorn in a thread on 127.0.0.1;
the model is the mask oracle, so the numbers the page shows are checked against the phantom's truth.
"""
import base64
import csv
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fetal_detect import settings
from fetal_detect.data.phantom import make_hc
from fetal_detect.report import write_image
from fetal_detect.serve.app import create_app
from fetal_detect.serve.testing import OracleAnalyzer, serving

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--remote-debugging-pipe", "--window-size=1280,900"]


def find_or_install_chromium() -> str:
    """Debian's chromium, installed with apt-get (as root, 10 min at most) when missing; else skip."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed (not root or no apt-get)")
    try:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], timeout=600,
                       capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except subprocess.TimeoutExpired:
        pytest.skip("chromium is not installed and `apt-get install chromium` timed out (no network?)")
    exe = shutil.which("chromium")
    if not exe:
        pytest.skip("chromium is not installed and `apt-get install -y chromium` failed (no network or mirror?)")
    return exe


class Chromium:
    """Headless chromium and a minimal DevTools-protocol client over its debugging pipe."""

    def __init__(self, exe: str, profile: Path):
        cmd_r, self._cmd_w = os.pipe()
        self._resp_r, resp_w = os.pipe()
        # move the child's ends above 10 so dup2 onto 3 and 4 cannot clobber them
        child_r, child_w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_r, resp_w))
        os.close(cmd_r), os.close(resp_w)

        def fds():
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(child_r), os.close(child_w)
        self._buf, self._id, self.events, self.session = b"", 0, [], None

    def send(self, method: str, params: dict | None = None, timeout_s: float = 60, browser: bool = False) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if self.session and not browser:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
                if "method" in reply:
                    self.events.append(reply)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._resp_r], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer {method} in {timeout_s} s")
            chunk = os.read(self._resp_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the debugging pipe")
            self._buf += chunk

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network", "DOM"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": url})

    def js(self, expression: str):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"page never satisfied {expression}")

    def close(self) -> None:
        try:
            self.send("Browser.close", browser=True, timeout_s=10)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._cmd_w), os.close(self._resp_r)


@pytest.fixture(scope="module")
def chromium_exe():
    return find_or_install_chromium()


def test_page_uploads_a_phantom_and_shows_the_measured_overlay(chromium_exe, tmp_path):
    head = make_hc(21, pixel_size_mm=0.25, size=(480, 360))
    upload = write_image(tmp_path / "phantom-head.png", head.image)
    app = create_app(workers=1, queue=2, analyzer_factory=lambda: OracleAnalyzer([(head.image, head.mask)]))
    downloads = tmp_path / "downloads"
    # the project's runs/ (not the per-session temporary one, which is deleted), so the screenshot stays
    shot = Path(os.environ.get("FETAL_DETECT_SCREENSHOT", settings.HOME / "runs" / "serve" / "browser-upload.png"))
    shot.parent.mkdir(parents=True, exist_ok=True)
    with serving(app) as url:
        browser = Chromium(chromium_exe, tmp_path / "profile")
        try:
            browser.send("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)},
                         browser=True)
            browser.open(url + "/")
            browser.wait_for("document.body && document.body.dataset.state === 'ready'")
            options = browser.js("[...document.getElementById('task').options].map((o) => o.value)")
            browser.js("document.getElementById('pixel').value = '0.25'")
            root = browser.send("DOM.getDocument")["root"]["nodeId"]
            node = browser.send("DOM.querySelector", {"nodeId": root, "selector": "#file"})["nodeId"]
            browser.send("DOM.setFileInputFiles", {"nodeId": node, "files": [str(upload)]})
            state = browser.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state")
            page = browser.js("""(() => {
                const c = document.getElementById('canvas');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let green = 0;
                for (let i = 0; i < d.length; i += 4) if (d[i + 1] > 180 && d[i] < 140 && d[i + 2] < 140) green++;
                const hc = document.querySelector('#measurements tr[data-key="hc_mm"]');
                return {state: document.getElementById('state').textContent, width: c.width, height: c.height,
                        green, hc: hc && hc.cells[1].textContent, unit: hc && hc.cells[2].textContent,
                        status: document.querySelector('dd[data-fact="status"]').textContent};
            })()""")
            browser.js("document.getElementById('dl-csv').click()")
            shot.write_bytes(base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"})["data"]))
            deadline = time.monotonic() + 20
            while not list(downloads.glob("*.csv")) and time.monotonic() < deadline:
                time.sleep(0.1)
            requested = [e["params"]["request"]["url"] for e in browser.events
                         if e["method"] == "Network.requestWillBeSent"]
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    assert state == "done", page
    from fetal_detect import measurers

    assert options == list(measurers.choices())  # the page's task list is the server's measurer table
    assert page["status"] == "ok" and (page["width"], page["height"]) == (480, 360)
    assert float(page["hc"]) == pytest.approx(head.truth["hc_mm"], rel=0.02) and page["unit"] == "mm"
    assert page["green"] > 200  # the ellipse is drawn on the canvas
    assert shot.stat().st_size > 10_000
    rows = list(csv.DictReader(open(next(downloads.glob("*.csv")))))
    assert float(rows[0]["hc_mm"]) == pytest.approx(float(page["hc"]), abs=0.01)
    assert requested and all(u.startswith((url, "data:", "blob:")) for u in requested), requested  # no CDN
