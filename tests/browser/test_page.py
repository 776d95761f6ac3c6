"""The page as a person uses it, in a real headless Chromium against the real API, worker and Dovecot.

Each step leaves a screenshot in the folder printed at the end of the run.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select

from harness import mailgen
from harness.dovecot import DovecotServer
from harness.service import Service, WorkerThread
from sync_function.crypto import encrypt_password
from tests.support.page import Steps, first_run, text, unlabelled_controls, wait
from tests.support.users import users

pytestmark = pytest.mark.docker

MESSAGES = 60


def _settings(database_url: str, user) -> tuple[bool, int] | None:  # type: ignore[no-untyped-def]
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT enabled, interval_minutes FROM public.user_settings WHERE user_id = %s", (user,)
        ).fetchone()
    return None if row is None else (row[0], row[1])


def test_a_user_signs_in_sets_auto_sync_adds_an_account_syncs_and_an_operator_sees_it(
    browser: WebDriver,
    screenshots: Path,
    service: Service,
    worker: WorkerThread,
    dovecot: DovecotServer,
    database_url: str,
) -> None:
    steps = Steps(browser, screenshots)
    with users(database_url) as (user,):
        mailbox_user, mailbox_password = dovecot.new_user("browser")
        dovecot.deliver(mailbox_user, [m.raw for m in mailgen.generate(MESSAGES, seed=11)])

        # Sign in with the demo-style link: the token leaves the address bar at once.
        browser.get(f"{service.url}/app/#token={service.token(user, expires_in=600)}")
        wait(browser, lambda d: d.find_element(By.ID, "signed-in").is_displayed())
        assert "#token" not in browser.current_url
        assert str(user) in text(browser, "who")
        wait(browser, lambda d: "off" in text(d, "next-run"))
        steps.shot("signed-in")

        # Turn auto-sync on, every 10 minutes; the interval list is the database's.
        interval = Select(browser.find_element(By.ID, "auto-interval"))
        assert [o.get_attribute("value") for o in interval.options][:3] == ["5", "6", "10"]
        browser.find_element(By.CSS_SELECTOR, "label[for=auto-enabled]").click()
        interval.select_by_value("10")
        browser.find_element(By.ID, "auto-save").click()
        wait(browser, lambda d: "Saved" in text(d, "auto-status"))
        wait(browser, lambda d: "Next automatic sync" in text(d, "next-run"))
        assert _settings(database_url, user) == (True, 10)
        steps.shot("auto-sync-on")

        # Change the interval, with the keyboard this time: pick, Tab to Save (the next control), Enter.
        select = browser.find_element(By.ID, "auto-interval")
        Select(select).select_by_value("30")
        select.send_keys(Keys.TAB)
        save = browser.switch_to.active_element
        assert save.get_attribute("id") == "auto-save"
        save.send_keys(Keys.ENTER)
        wait(browser, lambda d: _settings(database_url, user) == (True, 30))
        wait(browser, lambda d: "30 minutes" in text(d, "auto-status"))
        steps.shot("interval-changed")

        # A wrong password is refused with the server's reason, in words.
        browser.find_element(By.CSS_SELECTOR, "#add-account summary").click()
        fields = {
            "acc-host": dovecot.host,
            "acc-port": str(dovecot.port),
            "acc-user": mailbox_user,
            "acc-password": "not-the-password",
        }
        for element_id, value in fields.items():
            field = browser.find_element(By.ID, element_id)
            field.clear()
            field.send_keys(value)
        Select(browser.find_element(By.ID, "acc-tls")).select_by_value("plain")
        browser.find_element(By.CSS_SELECTOR, "#account-form button[type=submit]").click()
        wait(browser, lambda d: "Not added" in text(d, "accounts-status"))
        steps.shot("account-refused", near=browser.find_element(By.ID, "accounts-status"))

        # The right one is added and listed.
        password = browser.find_element(By.ID, "acc-password")
        password.clear()
        password.send_keys(mailbox_password, Keys.ENTER)
        wait(browser, lambda d: "Added" in text(d, "accounts-status"))
        rows = browser.find_elements(By.CSS_SELECTOR, "#accounts tbody tr")
        assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == [mailbox_user]
        steps.shot("account-added")

        # Sync now: the run is queued, a worker imports it, the progress reaches done.
        browser.find_element(By.ID, "sync-now").click()
        wait(browser, lambda d: "queued" in text(d, "sync-status"))
        steps.shot("sync-queued")
        wait(browser, lambda d: first_run(d).get("status") == "succeeded", timeout=60)
        run = wait(browser, first_run)
        assert (run["progress"], run["imported"], run["error"]) == (
            f"{MESSAGES} of {MESSAGES}",
            str(MESSAGES),
            "",
        )
        steps.shot("sync-done")

        # An account whose server went away: the next run fails, and says why.
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                """INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)
                   VALUES (%s, '127.0.0.1', 9, 'plain', 'gone', %s)""",
                (user, encrypt_password(service.config.encryption_key.get_secret_value(), "x")),
            )
        browser.refresh()
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#accounts tbody tr")) == 2)
        browser.find_element(By.ID, "sync-now").click()
        wait(browser, lambda d: first_run(d).get("status") == "failed", timeout=60)
        failed = wait(browser, first_run)
        assert "gone@127.0.0.1/INBOX" in failed["error"]
        assert "connection refused" in failed["error"]
        steps.shot("sync-failed")

        # Remove the broken account with its own labelled button.
        browser.find_element(By.CSS_SELECTOR, "button[aria-label='Remove gone on 127.0.0.1']").click()
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#accounts tbody tr")) == 1)

        # Every field of the page has a label, and every control is a real button or input.
        assert unlabelled_controls(browser) == []

        # The operator view, behind the service key, shows the same runs and the failing user.
        browser.find_element(By.ID, "show-operator").click()
        key = browser.find_element(By.ID, "operator-key")
        assert browser.switch_to.active_element == key
        key.send_keys(service.config.service_key.get_secret_value(), Keys.ENTER)
        wait(browser, lambda d: d.find_element(By.ID, "operator-data").is_displayed())
        runs_table = text(browser, "op-runs")
        assert run["id"] in runs_table and failed["id"] in runs_table
        assert str(user) in text(browser, "op-failing")
        assert "connection refused" in text(browser, "op-failing")
        steps.shot("operator-view")

        # A wrong key shows nothing but the refusal.
        browser.find_element(By.ID, "operator-key").send_keys("wrong", Keys.ENTER)
        wait(browser, lambda d: "Could not load" in text(d, "operator-status"))
    assert len(list(screenshots.glob("*.png"))) >= steps.count
