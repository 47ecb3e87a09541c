"""The README's images and the screenshot script agree (no browser, no Odoo): every image the
README shows is a page the script produces and the opt-in HttpCase captures, and back; each
is a PNG of the capture size. The script refuses at once, in one line, without Chromium."""

from __future__ import annotations

import importlib.util
import re
import struct
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CASE = REPO / "addons" / "ipai_reliability" / "tests" / "test_readme_screenshots.py"


@pytest.fixture(scope="module")
def screenshots():
    spec = importlib.util.spec_from_file_location("ipai_screenshots_script", REPO / "scripts" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def readme_images() -> set[str]:
    paths = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", README.read_text(encoding="utf-8"))
    assert all(p.startswith("docs/img/") for p in paths), paths
    return {p.removeprefix("docs/img/") for p in paths}


def test_the_readme_shows_exactly_the_pages_the_script_takes(screenshots):
    assert readme_images() == set(screenshots.PAGES)


def test_the_browser_case_captures_every_page_of_the_script(screenshots):
    captured = re.findall(r'self\.shoot\(\s*"([^"]+\.png)"', CASE.read_text(encoding="utf-8"))
    assert len(captured) == len(set(captured)), "a page captured twice"
    assert set(captured) == set(screenshots.PAGES)


def test_every_readme_image_is_a_capture_of_the_browser_size(screenshots):
    case = CASE.read_text(encoding="utf-8")
    size = tuple(int(n) for n in re.search(r"^WIDTH, HEIGHT = (\d+), (\d+)$", case, re.M).groups())
    for name in readme_images():
        data = (REPO / "docs" / "img" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert struct.unpack(">II", data[16:24]) == size, name


def test_without_chromium_the_script_stops_with_one_line(screenshots, tmp_path, capsys):
    not_executable = tmp_path / "chromium"
    not_executable.write_text("")
    for chromium in (tmp_path / "missing", not_executable):
        assert screenshots.main(["--chromium", str(chromium), "--out", str(tmp_path / "out")]) == 3
        err = capsys.readouterr().err.strip()
        assert err == (
            f"screenshots: Chromium not found at {chromium}: apt-get install -y chromium (or --chromium PATH)"
        )
    assert not (tmp_path / "out").exists()


def test_without_odoo_the_script_stops_with_one_line(screenshots, tmp_path, capsys, monkeypatch):
    # a real executable stands in for Chromium (only its --version is run before Odoo is looked for)
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\necho 'Chromium 1.0'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(screenshots.odoo_layer, "locate_odoo", lambda: None)
    assert screenshots.main(["--chromium", str(fake), "--out", str(tmp_path / "out")]) == 3
    assert capsys.readouterr().err.strip().startswith("screenshots: Odoo 19 not found")
