"""Adding each kind of account through the page's form, in a real headless Chromium.

OAuth2 against the harness's local provider and a Dovecot that checks its tokens; a private CA
against the test Dovecot's TLS port with a service that trusts only the system store; a folder
selection. Each step leaves a screenshot in the folder printed at the end of the run.
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import psycopg
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select

from harness import mailgen
from harness.dovecot import DovecotServer
from harness.oauth_provider import FakeProvider
from harness.service import Service, WorkerThread
from tests.support.page import Steps, account_rows, first_run, sign_in, text, unlabelled_controls, wait
from tests.support.users import users

pytestmark = pytest.mark.docker

REDIRECT = "https://app.example.com/oauth/callback"
BAD_PEM = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


def _fill(driver: WebDriver, **fields: str) -> None:
    """Type into the form's fields by id (acc_host → #acc-host), replacing what they held."""
    for name, value in fields.items():
        field = driver.find_element(By.ID, name.replace("_", "-"))
        field.clear()
        field.send_keys(value)


def _choose(driver: WebDriver, element_id: str, value: str) -> None:
    Select(driver.find_element(By.ID, element_id)).select_by_value(value)


def _open_form(driver: WebDriver, *, host: str, port: int, tls_mode: str, username: str) -> None:
    if driver.find_element(By.ID, "add-account").get_attribute("open") is None:
        driver.find_element(By.CSS_SELECTOR, "#add-account summary").click()
    _fill(driver, acc_host=host, acc_port=str(port), acc_user=username)
    _choose(driver, "acc-tls", tls_mode)


def _submit(driver: WebDriver) -> None:
    driver.find_element(By.CSS_SELECTOR, "#account-form button[type=submit]").click()


def _field_error(driver: WebDriver, element_id: str) -> str:
    """The words shown under a field, once the page marked the field invalid ('' until then)."""
    field = driver.find_element(By.ID, element_id)
    if field.get_attribute("aria-invalid") != "true":
        return ""
    return text(driver, str(field.get_attribute("aria-describedby")))


def _stored(database_url: str, user: uuid.UUID) -> list[tuple[str, str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT username, auth_method FROM public.email_accounts WHERE user_id = %s ORDER BY created_at",
            (user,),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def _sync_now(driver: WebDriver, status: str) -> dict[str, str]:
    """Press "Sync now" and wait for a new run to end with `status`; returns its row."""
    before = first_run(driver).get("id")
    driver.find_element(By.ID, "sync-now").click()
    wait(
        driver,
        lambda d: (run := first_run(d)).get("id") not in (None, before) and run["status"] == status,
        timeout=60,
    )
    return dict(wait(driver, first_run))


def test_an_oauth2_account_is_added_syncs_fails_when_revoked_and_is_reconnected(
    browser: WebDriver,
    screenshots: Path,
    service: Service,
    worker: WorkerThread,
    oauth_dovecot: DovecotServer,
    oauth_provider: FakeProvider,
    database_url: str,
) -> None:
    steps = Steps(browser, screenshots, prefix="oauth2-")
    with users(database_url) as (user,):
        mailbox_user, _ = oauth_dovecot.new_user("page-oauth")
        oauth_dovecot.deliver(mailbox_user, [m.raw for m in mailgen.generate(12, seed=41)])
        sign_in(browser, service, user)
        _open_form(
            browser, host=oauth_dovecot.host, port=oauth_dovecot.port, tls_mode="plain", username=mailbox_user
        )

        # Choosing OAuth2 swaps the password for the provider's fields; the custom provider asks for
        # its token endpoint.
        _choose(browser, "acc-kind", "oauth2")
        assert not browser.find_element(By.ID, "acc-password").is_displayed()
        assert not browser.find_element(By.ID, "acc-oauth-endpoint").is_displayed()
        _choose(browser, "acc-oauth-provider", "other")
        _choose(browser, "acc-oauth-mechanism", "OAUTHBEARER")
        _fill(
            browser,
            acc_oauth_endpoint="ftp://127.0.0.1/token",
            acc_oauth_client_id=oauth_provider.client_id,
            acc_oauth_client_secret=oauth_provider.client_secret,
            acc_oauth_refresh=oauth_provider.grant(mailbox_user),
        )
        assert unlabelled_controls(browser) == []
        steps.shot("form", near=browser.find_element(By.ID, "acc-oauth-endpoint"))

        # The API refuses the endpoint's scheme: the words appear under that field, nothing is stored.
        _submit(browser)
        wait(browser, lambda d: "https" in _field_error(d, "acc-oauth-endpoint"))
        assert "Not added" in text(browser, "accounts-status")
        assert browser.switch_to.active_element.get_attribute("id") == "acc-oauth-endpoint"
        assert _stored(database_url, user) == []
        steps.shot("endpoint-refused", near=browser.find_element(By.ID, "acc-oauth-endpoint"))

        # Corrected with the keyboard: the field is focused, retype it and press Enter.
        endpoint = browser.switch_to.active_element
        endpoint.clear()
        endpoint.send_keys(oauth_provider.token_endpoint, Keys.ENTER)
        wait(browser, lambda d: "Added" in text(d, "accounts-status"))
        assert _field_error(browser, "acc-oauth-endpoint") == ""
        assert _stored(database_url, user) == [(mailbox_user, "oauth2")]
        [row] = account_rows(browser)
        assert row[0] == mailbox_user
        assert row[1] == "OAuth2 (127.0.0.1, OAUTHBEARER)"
        assert row[3] == "INBOX"
        steps.shot("added", near=browser.find_element(By.ID, "accounts"))

        run = _sync_now(browser, "succeeded")
        assert (run["progress"], run["imported"], run["error"]) == ("12 of 12", "12", "")
        assert "method=OAUTHBEARER" in oauth_dovecot.log()
        steps.shot("synced", near=browser.find_element(By.ID, "history"))

        # The user revokes the consent at the provider: the next run fails and says to reconnect,
        # and the account is marked in the list.
        with oauth_provider.lock:
            tokens = [t for t, who in oauth_provider.refresh_tokens.items() if who == mailbox_user]
        for token in tokens:
            oauth_provider.revoke(token)
        failed = _sync_now(browser, "failed")
        assert "reconnect" in failed["error"]
        browser.refresh()
        wait(browser, lambda d: "Needs reconnecting" in account_rows(d)[0][1] if account_rows(d) else False)
        steps.shot("needs-reconnect", near=browser.find_element(By.ID, "accounts"))

        # Reconnect from the list, in a dialog; a wrong token is refused in words and changes nothing.
        browser.find_element(
            By.CSS_SELECTOR, f"button[aria-label='Reconnect {mailbox_user} on {oauth_dovecot.host}']"
        ).click()
        dialog = browser.find_element(By.ID, "reconnect-dialog")
        wait(browser, lambda d: dialog.is_displayed())
        assert browser.switch_to.active_element.get_attribute("id") == "rc-grant"
        browser.find_element(By.ID, "rc-refresh").send_keys("rt-not-a-grant", Keys.ENTER)
        wait(browser, lambda d: "Not reconnected" in text(d, "rc-status"))
        assert "invalid_grant" in text(browser, "rc-status")
        steps.shot("reconnect-refused")
        # This time with what a consent screen returns: an authorization code and its PKCE verifier.
        _choose(browser, "rc-grant", "code")
        assert not browser.find_element(By.ID, "rc-refresh").is_displayed()
        verifier = secrets.token_urlsafe(48)
        code = oauth_provider.authorization_code(mailbox_user, code_verifier=verifier, redirect_uri=REDIRECT)
        _fill(browser, rc_code=code, rc_verifier=verifier, rc_redirect=REDIRECT)
        browser.find_element(By.ID, "rc-redirect").send_keys(Keys.ENTER)
        wait(browser, lambda d: "Reconnected" in text(d, "accounts-status"))
        assert not dialog.is_displayed()
        wait(browser, lambda d: "Needs reconnecting" not in account_rows(d)[0][1])
        with psycopg.connect(database_url) as conn:
            marked = conn.execute(
                "SELECT needs_reconnect_since FROM public.email_accounts WHERE user_id = %s", (user,)
            ).fetchone()
        assert marked == (None,)
        steps.shot("reconnected", near=browser.find_element(By.ID, "accounts"))

        # The new grant works: the next run imports what arrived meanwhile.
        oauth_dovecot.deliver(mailbox_user, [m.raw for m in mailgen.generate(2, seed=59)])
        run = _sync_now(browser, "succeeded")
        assert (run["imported"], run["error"]) == ("2", "")


def test_a_private_ca_is_refused_in_words_when_unreadable_and_trusted_when_read_from_a_file(
    browser: WebDriver,
    screenshots: Path,
    system_trust_service: Service,
    system_trust_worker: WorkerThread,
    dovecot: DovecotServer,
    database_url: str,
    tmp_path: Path,
) -> None:
    steps = Steps(browser, screenshots, prefix="ca-")
    with users(database_url) as (user,):
        mailbox_user, mailbox_password = dovecot.new_user("page-ca")
        dovecot.deliver(mailbox_user, [m.raw for m in mailgen.generate(5, seed=43)])
        # This service trusts only the system store: the test Dovecot's certificate must come with the account.
        sign_in(browser, system_trust_service, user)
        _open_form(browser, host=dovecot.host, port=dovecot.tls_port, tls_mode="tls", username=mailbox_user)
        _fill(browser, acc_password=mailbox_password, acc_ca=BAD_PEM)
        _submit(browser)
        wait(browser, lambda d: "no readable certificate" in _field_error(d, "acc-ca"))
        assert "Not added" in text(browser, "accounts-status")
        assert _stored(database_url, user) == []
        steps.shot("unreadable-pem", near=browser.find_element(By.ID, "acc-ca"))

        # Picking the certificate's file fills the field; the account is verified over TLS and saved.
        pem_file = tmp_path / "dovecot-ca.pem"
        pem_file.write_text(dovecot.cert_pem)
        browser.find_element(By.ID, "acc-ca-file").send_keys(str(pem_file))
        wait(browser, lambda d: "dovecot-ca.pem" in text(d, "accounts-status"))
        ca_field = browser.find_element(By.ID, "acc-ca")
        assert (ca_field.get_attribute("value") or "").strip() == dovecot.cert_pem.strip()
        assert ca_field.get_attribute("aria-invalid") is None
        steps.shot("pem-read", near=ca_field)
        _submit(browser)
        wait(browser, lambda d: "Added" in text(d, "accounts-status"))
        [row] = account_rows(browser)
        assert row[1] == "password"
        assert row[2] == f"{dovecot.host}:{dovecot.tls_port} (tls), own CA certificate"

        run = _sync_now(browser, "succeeded")
        assert (run["imported"], run["error"]) == ("5", "")
        steps.shot("synced", near=browser.find_element(By.ID, "history"))


def test_a_folder_selection_imports_only_those_folders(
    browser: WebDriver,
    screenshots: Path,
    service: Service,
    worker: WorkerThread,
    dovecot: DovecotServer,
    database_url: str,
) -> None:
    steps = Steps(browser, screenshots, prefix="folders-")
    with users(database_url) as (user,):
        mailbox_user, mailbox_password = dovecot.new_user("page-folders")
        generated = [m.raw for m in mailgen.generate(12, seed=47)]
        dovecot.deliver(mailbox_user, generated[:4])
        dovecot.deliver(mailbox_user, generated[4:7], mailbox="Archive")
        dovecot.deliver(mailbox_user, generated[7:], mailbox="Junk")
        sign_in(browser, service, user)
        _open_form(browser, host=dovecot.host, port=dovecot.port, tls_mode="plain", username=mailbox_user)
        _fill(browser, acc_password=mailbox_password)
        # With the keyboard: the next choice of the folder select swaps the one folder for a list.
        browser.find_element(By.ID, "acc-folder-choice").send_keys(Keys.ARROW_DOWN)
        wait(browser, lambda d: d.find_element(By.ID, "acc-folders").is_displayed())
        assert not browser.find_element(By.ID, "acc-mailbox").is_displayed()

        # A folder the server does not have: the account is refused with the server's words.
        _fill(browser, acc_folders="INBOX\nArchive\nNo Such Folder")
        _submit(browser)
        wait(browser, lambda d: "Not added" in text(d, "accounts-status"))
        assert "No Such Folder" in text(browser, "accounts-status")
        assert _stored(database_url, user) == []
        steps.shot("missing-folder", near=browser.find_element(By.ID, "accounts-status"))

        _fill(browser, acc_password=mailbox_password, acc_folders="INBOX\nArchive")
        _submit(browser)
        wait(browser, lambda d: "Added" in text(d, "accounts-status"))
        [row] = account_rows(browser)
        assert row[3] == "INBOX, Archive"
        steps.shot("added", near=browser.find_element(By.ID, "accounts"))

        run = _sync_now(browser, "succeeded")
        assert (run["imported"], run["error"]) == ("7", "")
        with psycopg.connect(database_url) as conn:
            folders = conn.execute(
                "SELECT mailbox, count(*) FROM public.message_locations WHERE user_id = %s "
                "GROUP BY mailbox ORDER BY mailbox",
                (user,),
            ).fetchall()
        assert folders == [("Archive", 3), ("INBOX", 4)]
        steps.shot("synced", near=browser.find_element(By.ID, "history"))

        # Every folder but the special uses ticked (Junk and Trash by default, Sent added here).
        other_user, other_password = dovecot.new_user("page-all")
        more = [m.raw for m in mailgen.generate(8, seed=53)]
        for folder, messages in (("INBOX", more[:2]), ("Archive", more[2:4]), ("Sent", more[4:6])):
            dovecot.deliver(other_user, messages, mailbox=folder)
        dovecot.deliver(other_user, more[6:7], mailbox="Junk")
        dovecot.deliver(other_user, more[7:], mailbox="Trash")
        _open_form(browser, host=dovecot.host, port=dovecot.port, tls_mode="plain", username=other_user)
        _fill(browser, acc_password=other_password)
        _choose(browser, "acc-folder-choice", "all")
        ticked = [
            b.get_attribute("id") for b in browser.find_elements(By.CSS_SELECTOR, "#acc-skip input:checked")
        ]
        assert ticked == ["skip-junk", "skip-trash"]
        browser.find_element(By.CSS_SELECTOR, "label[for=skip-sent]").click()
        steps.shot("every-folder", near=browser.find_element(By.ID, "acc-skip"))
        _submit(browser)
        wait(browser, lambda d: "Added" in text(d, "accounts-status"))
        assert [row[3] for row in account_rows(browser)] == [
            "INBOX, Archive",
            "every folder except Junk, Trash, Sent",
        ]
        run = _sync_now(browser, "succeeded")
        assert (run["imported"], run["error"]) == ("4", "")
        with psycopg.connect(database_url) as conn:
            folders = conn.execute(
                "SELECT l.mailbox, count(*) FROM public.message_locations AS l "
                "JOIN public.email_accounts AS a ON a.id = l.account_id "
                "WHERE a.user_id = %s AND a.username = %s GROUP BY l.mailbox ORDER BY l.mailbox",
                (user, other_user),
            ).fetchall()
        assert folders == [("Archive", 2), ("INBOX", 2)]
        steps.shot("every-folder-synced", near=browser.find_element(By.ID, "accounts"))


def test_the_page_places_each_api_error_under_the_field_it_names_and_keeps_the_rest_in_words(
    browser: WebDriver, service: Service, database_url: str
) -> None:
    """The rules of placeErrors (accounts.js), on the API's own message shapes (sync_function/errors.py)."""
    with users(database_url) as (user,):
        sign_in(browser, service, user)
        browser.find_element(By.CSS_SELECTOR, "#add-account summary").click()
        _choose(browser, "acc-kind", "oauth2")
        _choose(browser, "acc-oauth-provider", "other")
        _choose(browser, "acc-folder-choice", "chosen")

        def place(message: str) -> dict[str, list[object]]:
            return dict(browser.execute_script("return placeErrors(arguments[0], ACCOUNT_FIELDS)", message))

        assert place("ca_pem: Value error, ca_pem holds no readable certificate") == {
            "placed": [["acc-ca", "ca_pem holds no readable certificate"]],
            "rest": [],
        }
        # A nested location, a list item's index, and a field named by the message's first word.
        assert place("oauth2.client_id: String should have at least 1 character; folders.1: too long") == {
            "placed": [
                ["acc-oauth-client-id", "String should have at least 1 character"],
                ["acc-folders", "too long"],
            ],
            "rest": [],
        }
        assert place("oauth2: token_endpoint must be an https URL")["placed"] == [
            ["acc-oauth-endpoint", "token_endpoint must be an https URL"]
        ]
        # The destination check's form: the field's name, a colon, then the reason.
        assert place("oauth2: token_endpoint: must be an https URL")["placed"] == [
            ["acc-oauth-endpoint", "token_endpoint: must be an https URL"]
        ]
        # Whole-body rules and messages that merely contain a colon stay whole, in the status line.
        assert place("body: Value error, give either password or oauth2") == {
            "placed": [],
            "rest": ["give either password or oauth2"],
        }
        assert place("imap.example.com: no such host") == {
            "placed": [],
            "rest": ["imap.example.com: no such host"],
        }
        # A field of a choice not taken (hidden and disabled) is not where the words go.
        _choose(browser, "acc-kind", "password")
        assert place("oauth2.client_id: required")["rest"] == ["oauth2.client_id: required"]
