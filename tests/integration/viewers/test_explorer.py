"""Orthanc Explorer with Radiogate's extension (pacs_plugin/explorer.js, docs/pacs.md) in headless
Debian Chromium: the lane badge and certainty of a critical study on its study page, the panel
that says why when the user may not read findings, and the worklist page (opened from the lookup
page) with the critical study first. Screenshots go to tests/artifacts/viewers/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.pacs.conftest import Pacs, seed_study, start_pacs, upload
from tests.integration.viewers.test_ohif import CHROMIUM, CHROMIUM_ARGS
from tests.support.data import DATA

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "viewers"
LOAD = 60_000  # ms


@pytest.fixture
def pacs(fresh_dsn: str, tmp_path: Path) -> Iterator[Pacs]:
    running = start_pacs(fresh_dsn, tmp_path / "pacs")
    try:
        yield running
    finally:
        running.orthanc.stop()


@pytest.fixture
def critical(pacs: Pacs) -> str:
    """A critical study in the archive, decided by the model with a score of 0.93 (rows as the
    pipeline leaves them); and an older routine study in the worklist."""
    study_id = str(upload(pacs, DATA / "ctbrain1.dcm")["ParentStudy"])
    tags = pacs.call("service", f"/studies/{study_id}").json()["MainDicomTags"]
    received = seed_study(pacs.dsn, tags["StudyInstanceUID"], lane="critical", age_minutes=3)
    seed_study(pacs.dsn, "1.2.826.0.1.77", lane="routine", age_minutes=20)
    with psycopg.connect(pacs.dsn) as conn:
        conn.execute(
            """INSERT INTO series (series_instance_uid, study_instance_uid, node, modality,
                   state, archive_series_uid) VALUES ('9.9.1', %s, 'node1', 'CT', 'complete',
                   '9.9.1.5')""",
            (received,),
        )
        conn.execute(
            """INSERT INTO series_triage (series_instance_uid, study_instance_uid, node, state,
                   lane, score, quality, reasons) VALUES ('9.9.1', %s, 'node1', 'decided',
                   'critical', 0.93, 'complete', '{model-critical}')""",
            (received,),
        )
    return study_id


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]'")
    assert CHROMIUM.is_file(), "Debian's chromium is not installed: make system-deps"
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)  # fmt: skip
        yield chromium
        chromium.close()


def _page(browser: Any, pacs: Pacs, who: str) -> tuple[Any, list[str]]:
    creds = pacs.users[who]
    context = browser.new_context(
        http_credentials={"username": creds.user, "password": creds.password},
        viewport={"width": 1280, "height": 900},
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


def _screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_critical_study_shows_its_badge_and_certainty(
    browser: Any, pacs: Pacs, critical: str
) -> None:
    page, errors = _page(browser, pacs, "alice")
    page.goto(f"{pacs.orthanc.url}/app/explorer.html#study?uuid={critical}")
    panel = page.locator("#radiogate-study-panel")
    panel.wait_for(timeout=LOAD)
    assert panel.get_attribute("data-lane") == "critical"
    badge = panel.locator(".radiogate-lane-badge")
    assert badge.get_attribute("data-lane") == "critical" and badge.inner_text() == "CRITICAL"
    certainty = panel.locator(".radiogate-certainty")
    assert float(certainty.get_attribute("data-certainty")) == pytest.approx(0.93)
    assert "certainty 0.93" in certainty.inner_text()
    link = panel.locator("#radiogate-findings-link").get_attribute("href")
    assert link.endswith(f"radiogate/studies/{critical}")
    _screenshot(page, "explorer-critical-study")
    assert not errors, errors
    page.context.close()


def test_findings_need_the_radiologist_role(browser: Any, pacs: Pacs, critical: str) -> None:
    """An admin reads the study in Explorer but not Radiogate's findings: the panel says why;
    an Orthanc user without a Radiogate role is refused the Explorer itself (docs/pacs.md)."""
    page, errors = _page(browser, pacs, "olga")
    page.goto(f"{pacs.orthanc.url}/app/explorer.html#study?uuid={critical}")
    panel = page.locator("#radiogate-study-panel")
    panel.wait_for(timeout=LOAD)
    assert panel.get_attribute("data-status") == "403"
    assert "no Radiogate role" in panel.inner_text()
    assert page.locator(".radiogate-lane-badge").count() == 0
    assert not errors, errors
    page.context.close()
    page, _errors = _page(browser, pacs, "mallory")
    answer = page.context.request.get(f"{pacs.orthanc.url}/app/explorer.html")
    assert answer.status == 403
    page.context.close()


def test_the_worklist_page_puts_the_critical_study_first(
    browser: Any, pacs: Pacs, critical: str
) -> None:
    page, errors = _page(browser, pacs, "alice")
    page.goto(f"{pacs.orthanc.url}/app/explorer.html")
    page.locator("#radiogate-worklist-button").click(timeout=LOAD)  # from the lookup page
    rows = page.locator("#radiogate-worklist-table tr.radiogate-worklist-row")
    rows.nth(1).wait_for(timeout=LOAD)
    assert [rows.nth(i).get_attribute("data-lane") for i in range(rows.count())] == [
        "critical", "routine"]  # fmt: skip
    assert rows.first.get_attribute("data-orthanc-id") == critical
    assert rows.first.locator(".radiogate-lane-badge").inner_text() == "CRITICAL"
    _screenshot(page, "explorer-worklist")
    # the page's own address works too (a bookmark, a link from elsewhere)
    page.goto(f"{pacs.orthanc.url}/app/explorer.html#radiogate-worklist")
    page.reload()
    rows.nth(1).wait_for(timeout=LOAD)
    assert rows.first.get_attribute("data-lane") == "critical"
    assert not errors, errors
    page.context.close()
