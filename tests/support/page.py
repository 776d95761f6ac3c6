"""Driving the page in a real browser: numbered screenshots, waits that survive redraws, the history's rows."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from harness.service import Service


class Steps:
    """Numbered screenshots, one per step."""

    def __init__(self, driver: WebDriver, folder: Path, prefix: str = "") -> None:
        self.driver = driver
        self.folder = folder
        self.prefix = prefix
        self.count = 0

    def shot(self, name: str, *, near: WebElement | None = None) -> None:
        """Save the window; `near` is scrolled to the middle first, so the step's subject is in the picture."""
        if near is not None:
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", near)
        self.count += 1
        self.driver.save_screenshot(str(self.folder / f"{self.prefix}{self.count:02d}-{name}.png"))


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = 30) -> Any:
    # The history table is redrawn every second while a run is active: a row can go stale mid-read.
    waiter = WebDriverWait(
        driver, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
    )
    return waiter.until(lambda d: condition(d))


def text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def first_run(driver: WebDriver) -> dict[str, str]:
    """The newest run of the history table, as the page shows it ({} while there is none)."""
    rows = driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    if not rows:
        return {}
    cells = rows[0].find_elements(By.TAG_NAME, "td")
    return {
        "id": rows[0].get_attribute("data-run-id") or "",
        "status": cells[2].text,
        "progress": cells[3].text,
        "imported": cells[4].text,
        "error": cells[5].text,
    }


def sign_in(driver: WebDriver, service: Service, user: uuid.UUID) -> None:
    """Open the page with a demo-style sign-in link and wait until it shows the user's data."""
    driver.get(f"{service.url}/app/#token={service.token(user, expires_in=600)}")
    wait(driver, lambda d: d.find_element(By.ID, "signed-in").is_displayed())
    wait(driver, lambda d: d.find_element(By.ID, "next-run").text != "")


def account_rows(driver: WebDriver) -> list[list[str]]:
    """The accounts table's cells, row by row."""
    return [
        [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        for row in driver.find_elements(By.CSS_SELECTOR, "#accounts tbody tr")
    ]


def unlabelled_controls(driver: WebDriver) -> list[str]:
    """Ids of the page's inputs, selects and text areas that no label names."""
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll('input, select, textarea')]"
            ".filter(e => !document.querySelector(`label[for='${e.id}']`)).map(e => e.id)"
        )
    )
