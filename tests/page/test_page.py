#!/usr/bin/env python3
"""The page at / in a real browser: headless Chromium (Debian's chromium and chromium-driver),
driven by Selenium, against a real arbiter serving etc/models.toml's three models.

It opens the page, picks the trained model, uploads var/photos/chelsea.png and reads the labels
and scores the API gives for the same photo; uploads a file that is not an image and reads the
error the API's status means; does both again at a phone's viewport (390x844); opens /docs; and
saves screenshots (the whole page: page-desktop.png, page-phone.png; the top of /docs:
page-docs.png) to var/page/, so a test run leaves the checkout as it was. It prints the page's
weight and the time from opening it to the first answer.

    var/venv/bin/python tests/page/test_page.py              # after cargo build --release
    SHOTS=docs var/venv/bin/python tests/page/test_page.py   # the screenshots docs/ shows

ARBITER_BIN names another binary; SHOTS another folder for the screenshots.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "var/photos/chelsea.png"
MODEL = "efficientnet-lite0"
SHOTS = Path(os.environ.get("SHOTS", ROOT / "var" / "page"))
# The words the page shows for each error status (crates/worker/src/page/page.js).
MESSAGES = {
    400: "could not read this file as an image",
    413: "too big",
    415: "not an image the server can read",
    503: "busy",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary():
    if os.environ.get("ARBITER_BIN"):
        return Path(os.environ["ARBITER_BIN"])
    for profile in ("release", "debug"):
        path = ROOT / "target" / profile / "arbiter"
        if path.exists():
            return path
    sys.exit("no arbiter binary: run cargo build --release first")


def config(tmp, port):
    """etc/models.toml on a free port, with its own pidfile and control socket, its relative
    paths made absolute (they are relative to etc/)."""
    text = (ROOT / "etc/models.toml").read_text()

    def absolute(m):
        value = m.group(3)
        if not value.startswith("/"):
            value = str((ROOT / "etc" / value).resolve())
        return f'{m.group(1)}{m.group(2)}"{value}"'

    text = re.sub(r'(?m)^(\s*(?:path|labels|runtime_library)\s*=\s*)()"([^"]*)"', absolute, text)
    server = (
        f'[server]\nbind = ["127.0.0.1:{port}"]\npidfile = "{tmp}/arbiter.pid"\n'
        f'control_socket = "{tmp}/arbiter.sock"\n'
        f"allow_root = {'true' if os.getuid() == 0 else 'false'}\n\n"
    )
    path = Path(tmp) / "arbiter.toml"
    path.write_text(server + text)
    return path


def http(url, data=None, headers=None, method=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def start(tmp):
    port = free_port()
    cfg = config(tmp, port)
    log = open(Path(tmp) / "arbiter.log", "wb")
    proc = subprocess.Popen([str(binary()), "start", "-c", str(cfg)], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"arbiter exited ({proc.returncode}):\n" + (Path(tmp) / "arbiter.log").read_text())
        try:
            if http(base + "/readyz")[0] == 200:
                return proc, base
        except OSError:
            pass
        time.sleep(0.1)
    stop(proc)
    sys.exit("arbiter not ready within 90 s")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def phone(driver, on):
    if on:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    else:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def screenshot(driver, name, whole=True):
    """The whole page, beyond the viewport (or the viewport only)."""
    import base64

    shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                  {"format": "png", "captureBeyondViewport": whole})
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / name).write_bytes(base64.b64decode(shot["data"]))


def wait_state(driver, states, timeout=30):
    def ready(d):
        state = d.find_element(By.ID, "out").get_attribute("data-state")
        return state if state in states else False

    return WebDriverWait(driver, timeout, poll_frequency=0.02).until(ready)


def shown(driver):
    labels = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#labels .label")]
    scores = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#labels .score")]
    return labels, scores


def upload_photo(driver, base, expected):
    """Opens the page, picks the model, uploads the photo; returns seconds from open to answer."""
    opened = time.monotonic()
    driver.get(base + "/")
    WebDriverWait(driver, 10, poll_frequency=0.02).until(
        lambda d: d.find_element(By.ID, "model-row").is_displayed())
    Select(driver.find_element(By.ID, "model")).select_by_value(f"{MODEL}/versions/1")
    driver.find_element(By.ID, "file").send_keys(str(PHOTO))
    assert wait_state(driver, {"done", "error"}) == "done", driver.find_element(By.ID, "status").text
    took = time.monotonic() - opened
    labels, scores = shown(driver)
    assert labels == [c["label"] for c in expected["classes"]], (labels, expected)
    assert scores == [pct(c["score"]) for c in expected["classes"]], (scores, expected)
    meta = driver.find_element(By.ID, "meta").text
    assert f"Answered by {MODEL}, version 1" in meta and "server" in meta, meta
    assert driver.find_element(By.ID, "preview").get_attribute("src").startswith("blob:")
    return took


def pct(score):
    """The page's rounding of a score (page.js)."""
    value = score * 100
    return f"{value:.0f}%" if score >= 0.1 else f"{value:.1f}%"


def upload_bad(driver, bad, status, error):
    driver.find_element(By.ID, "file").send_keys(str(bad))
    assert wait_state(driver, {"error"}) == "error"
    text = driver.find_element(By.ID, "status").text
    assert MESSAGES[status] in text, (status, text)
    detail = driver.find_element(By.CSS_SELECTOR, "#labels .detail").text
    assert error in detail, (detail, error)
    return text


def main():
    tmp = tempfile.mkdtemp(prefix="arbiter-page-")
    proc, base = start(tmp)
    driver = None
    try:
        # What the API answers for the photo, and for a file that is not an image.
        photo = PHOTO.read_bytes()
        code, headers, body = http(f"{base}/model_predict/{MODEL}/versions/1", photo,
                                   {"Content-Type": "image/png"})
        assert code == 200 and headers["X-Model-Name"] == MODEL, (code, body)
        expected = json.loads(body)
        bad = Path(tmp) / "notes.txt"
        bad.write_text("this is not a photo\n")
        code, _, body = http(f"{base}/model_predict/{MODEL}/versions/1", bad.read_bytes(),
                             {"Content-Type": "image/jpeg"})
        bad_status, bad_error = code, json.loads(body)["error"]
        assert bad_status in MESSAGES, bad_status
        weight = sum(len(http(base + p)[2]) for p in ("/", "/page.js", "/page.css"))

        driver = browser()
        desktop = upload_photo(driver, base, expected)
        screenshot(driver, "page-desktop.png")
        upload_bad(driver, bad, bad_status, bad_error)

        phone(driver, True)
        mobile = upload_photo(driver, base, expected)
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide at a phone's 390"
        screenshot(driver, "page-phone.png")
        message = upload_bad(driver, bad, bad_status, bad_error)

        phone(driver, False)
        driver.get(base + "/docs")
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#ops .op"))
        spec = json.loads(http(base + "/openapi.json")[2])
        ops = sum(1 for item in spec["paths"].values() for m in item if m in ("get", "post"))
        sections = driver.find_elements(By.CSS_SELECTOR, "#ops .op")
        assert len(sections) == ops, (len(sections), ops)
        predict = driver.find_element(By.ID, "modelPredict").text
        assert f"curl -F image=@photo.jpg {base}/model_predict" in predict, predict
        assert "requests.post(" in predict and 'files={"image": f}' in predict, predict
        screenshot(driver, "page-docs.png", whole=False)

        # No script or style was refused (CSP) and nothing failed but the bad uploads.
        for entry in driver.get_log("browser"):
            if entry["level"] == "SEVERE" and f"status of {bad_status}" not in entry["message"]:
                raise AssertionError(f"browser console: {entry['message']}")

        print(f"page: {weight} bytes (/, /page.js, /page.css)")
        print(f"open to first answer: {desktop * 1000:.0f} ms at 1280x900, "
              f"{mobile * 1000:.0f} ms at 390x844")
        print(f"labels: {', '.join(c['label'] for c in expected['classes'])}")
        print(f"bad file: {bad_status}: {message}")
        print(f"screenshots: {SHOTS}/page-desktop.png, page-phone.png, page-docs.png")
        print("page test passed")
    finally:
        if driver is not None:
            driver.quit()
        stop(proc)


if __name__ == "__main__":
    main()
