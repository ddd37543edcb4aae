"""The explorer page (``GET /``) rendered by headless Chromium against the served network.

Chromium comes from Debian's ``chromium`` package (``make test`` installs it when running as
root); without a browser the page tests skip and say why. The screenshot lands in the pytest
tmp dir and in ``tests/artifacts/explorer.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_TIMEOUT_S = 90


def _chromium() -> str | None:
    env = os.environ.get("GONKA_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _browse(browser: str, profile: Path, url: str, *mode: str) -> subprocess.CompletedProcess:
    args = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-proxy-server",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
        # NOTE: virtual time runs the page's timers fast but waits for its fetches, so the
        # first poll of v1/explorer has rendered before the DOM is dumped or the shot taken.
        "--virtual-time-budget=6000",
        *mode,
        url,
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S)


@pytest.fixture(scope="module")
def with_traffic(served) -> dict:
    """The served network after two inferences, once the ledger counts them as served."""
    client = openai.OpenAI(base_url=served["url"] + "v1", api_key=served["api_key"], max_retries=0)
    for prompt in ("explore", "the ledger"):
        client.completions.create(model="fake", prompt=prompt, max_tokens=3, seed=1)
    deadline = time.monotonic() + 30
    while True:
        doc = httpx.get(served["url"] + "v1/explorer", timeout=30).json()
        if doc["totals"]["inferences"] >= 2 or time.monotonic() > deadline:
            return doc
        time.sleep(0.2)


def test_explorer_json_has_participants_epoch_and_recent_inferences(with_traffic) -> None:
    doc = with_traffic
    assert doc["network"] == "openaitest" and doc["model"] == "fake"
    assert [p["name"] for p in doc["participants"]] == ["p0", "p1", "p2"]
    assert all(p["weight"] == 100 and p["status"] for p in doc["participants"])
    assert doc["totals"]["inferences"] >= 2
    assert doc["height"] > 0
    epoch = doc["epoch"]
    assert epoch["source"] == "ledger"  # the replica reports its epoch view
    # the ledger's view is of height + 1, where a transaction sent now would land
    assert epoch["epoch_start"] <= doc["height"] + 1 < epoch["epoch_end"]
    assert 0 <= epoch["offset"] < epoch["epoch_blocks"]
    assert epoch["phase"] in ("poc_sprint", "poc_validation", "inference", "settlement")
    recent = doc["inferences"]
    assert len(recent) >= 2 and all(len(r["id"]) == 64 for r in recent)
    assert {r["executor"] for r in recent} <= {"p0", "p1", "p2"}
    heights = [r["start_height"] for r in recent]
    assert heights == sorted(heights, reverse=True)  # newest first


def test_explorer_page_renders_in_headless_chromium(
    served, with_traffic, tmp_path: Path, artifacts_dir: Path
) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip(
            "no chromium on PATH: `make test` installs Debian's chromium when run as root; "
            "otherwise `apt-get install chromium` or set GONKA_CHROMIUM"
        )
    page = httpx.get(served["url"], timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN, nothing external

    dom = _browse(browser, tmp_path / "profile-dom", served["url"], "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-loaded="1"' in html, html[:2000]  # the script fetched and rendered the JSON
    assert re.findall(r'data-participant="([^"]+)"', html) == ["p0", "p1", "p2"]
    shown = re.search(r'id="total-inferences">(\d+)<', html)
    assert shown is not None and int(shown.group(1)) >= with_traffic["totals"]["inferences"] >= 2
    assert len(re.findall(r"data-inference=", html)) >= 2
    assert re.search(r'id="phase">[a-z ]+<', html)

    shot = tmp_path / "explorer.png"
    run = _browse(browser, tmp_path / "profile-shot", served["url"], f"--screenshot={shot}")
    assert run.returncode == 0, run.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    shutil.copyfile(shot, artifacts_dir / "explorer.png")
