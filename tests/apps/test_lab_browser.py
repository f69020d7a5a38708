"""The lab report in a real browser: headless Chromium loads report.html from the quick lab run,
its own script counts the pictures that loaded, and a screenshot shows the page is drawn.

Chromium is Debian's ``chromium`` package; when it is missing this test runs
``scripts/setup_browser.sh`` (root + apt-get, idempotent) first, and skips with the script's
message only where it cannot be installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from chainrule.apps.lab import EXPERIMENTS
from lab_fixtures import quick_lab  # the session's one quick lab run, shared

ROOT = Path(__file__).resolve().parents[2]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        setup = subprocess.run(
            ["bash", str(ROOT / "scripts" / "setup_browser.sh")],
            capture_output=True,
            text=True,
            timeout=900,
        )
        path = find_chromium()
        if path is None:
            pytest.skip(
                "headless Chromium is not installed and scripts/setup_browser.sh could not "
                "install it: " + (setup.stdout + setup.stderr).strip()
            )
    return path


def run_chromium(chromium, profile, *args):
    command = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert completed.returncode == 0, (
        f"chromium failed ({completed.returncode}): {completed.stderr[-2000:]}"
    )
    return completed.stdout


def test_report_renders_with_every_picture_loaded(chromium, tmp_path_factory, tmp_path):
    out, status, _, _ = quick_lab(tmp_path_factory)
    assert status == 0
    report = out / "report.html"
    html = report.read_text()
    expected_images = len(re.findall(r"<img ", html))
    assert expected_images >= 5

    dom = run_chromium(
        chromium,
        tmp_path / "profile-dom",
        "--virtual-time-budget=10000",
        "--dump-dom",
        report.as_uri(),
    )
    body = re.search(r"<body([^>]*)>", dom)
    assert body, "no <body> in the DOM Chromium dumped"
    attributes = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    assert attributes.get("data-images-total") == str(expected_images), attributes
    assert attributes.get("data-images-loaded") == str(expected_images), (
        "some pictures did not load"
    )
    assert attributes.get("data-sections") == str(len(EXPERIMENTS))
    for name in EXPERIMENTS:
        assert f'id="{name}"' in dom, f"section {name} missing from the rendered page"

    shot = tmp_path / "report.png"
    run_chromium(
        chromium,
        tmp_path / "profile-shot",
        "--window-size=1280,3000",
        f"--screenshot={shot}",
        report.as_uri(),
    )
    assert shot.exists() and shot.read_bytes().startswith(b"\x89PNG")
    from matplotlib import image

    pixels = image.imread(shot)
    assert pixels.shape[0] == 3000 and pixels.shape[1] == 1280
    assert float(pixels[..., :3].std()) > 0.05, "the screenshot is blank"
