"""The console in a real headless Chromium, over a store a real sync against the sandbox
wrote: sign in, see a run, open a record's history, retry and discard dead letters,
explain a record, check the stages against the live CRM; and the same pages refusing an
anonymous visitor and a read-only user. A screenshot of each page lands in
``.connector/screenshots/``."""

from __future__ import annotations

from typing import Any

from console_browser import SF, SyncedWorld, chromium, cookie_client, form_token, screenshot
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from connector.state.console_reads import ConsoleReads


def follow(driver: Any, element: Any) -> None:
    """Click a link or a form's button and wait for the next page to replace this one.

    The click returns before the browser has the next page (a busy machine shows it):
    reading at once would read the old page, or an element of it gone stale.
    """
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 20).until(staleness_of(page))


def sign_in(driver: Any, secret: str) -> None:
    """Submit the sign-in form and wait for the next page."""
    driver.find_element(By.ID, "secret").send_keys(secret)
    follow(driver, driver.find_element(By.CSS_SELECTOR, "form button[type=submit]"))


def test_an_admin_reads_runs_and_histories_and_acts_on_dead_letters(world: SyncedWorld) -> None:
    with world.console() as (server, store), chromium() as driver:
        letters = store.list_dead_letters(SF)
        assert len(letters) >= 2
        driver.get(server.url + "/")
        assert "/sign-in" in driver.current_url and "Sign in" in driver.title
        screenshot(driver, "sign_in")
        sign_in(driver, world.admin_secret)

        # connections: the run, its outcome, the dead letters
        assert driver.current_url == server.url + "/"
        table = driver.find_element(By.CSS_SELECTOR, "table.connections").text
        assert SF in table and "partial" in table and f"{len(letters)} open" in table
        screenshot(driver, "connections")

        # the run and the records it touched
        follow(driver, driver.find_element(By.CSS_SELECTOR, "table.connections a[href^='/runs/']"))
        assert "Run #" in driver.find_element(By.TAG_NAME, "h1").text
        records = driver.find_element(By.CSS_SELECTOR, "table.records").text
        assert "created" in records and "rejected" in records
        screenshot(driver, "run")

        # one created record's history: what was sent, what came back, both sides
        created = driver.find_element(
            By.XPATH, "//table[contains(@class,'records')]//tr[.//span[text()='created']]//a"
        )
        crm_id = created.text
        follow(driver, created)
        assert crm_id in driver.find_element(By.TAG_NAME, "h1").text
        entry = driver.find_element(By.CSS_SELECTOR, "article.entry").text
        assert "created" in entry and "Referral_Identifier__c" in entry
        link = store.connection(SF).links.get(crm_id)
        assert link is not None and link.referral_id in entry
        pc = driver.find_element(By.LINK_TEXT, "Open in Partner Center").get_attribute("href")
        assert pc.endswith(link.referral_id)
        driver.find_element(By.CSS_SELECTOR, "article.entry details summary").click()
        assert '"customerProfile"' in driver.find_element(By.CSS_SELECTOR, "article pre").text
        screenshot(driver, "record")

        # dead letters: retry one, discard another
        driver.get(server.url + "/dead-letters")
        screenshot(driver, "dead_letters")
        to_retry, to_discard = letters[0], letters[1]
        driver.find_element(By.CSS_SELECTOR, f"input[name=id][value='{to_retry.id}']").click()
        follow(driver, driver.find_element(By.XPATH, "//button[text()='Retry selected']"))
        notice = driver.find_element(By.CSS_SELECTOR, "p.notice").text
        assert "1 dead letter(s) marked for retry" in notice
        retried = store.get_dead_letter(to_retry.id)
        assert retried is not None and retried.reason_code.startswith(("retry:", "transient:"))
        follow(
            driver,
            driver.find_element(By.CSS_SELECTOR, f"#letter-{to_discard.id} button[name=discard]"),
        )
        assert "discarded" in driver.find_element(By.CSS_SELECTOR, "p.notice").text
        discarded = store.get_dead_letter(to_discard.id)
        assert discarded is not None and discarded.resolved

        # mappings: explain the retried record, then the stages against the live CRM
        driver.get(server.url + "/mappings")
        screenshot(driver, "mappings")
        field = driver.find_element(By.ID, f"explain-{SF}")
        field.send_keys(to_retry.crm_id)
        page = driver.find_element(By.TAG_NAME, "html")
        field.submit()
        WebDriverWait(driver, 20).until(staleness_of(page))
        verdicts = driver.find_element(By.TAG_NAME, "main").text
        assert "The next sync would:" in verdicts
        assert "deal field" in driver.find_element(By.CSS_SELECTOR, "table.explain").text
        screenshot(driver, "explain")
        driver.get(server.url + "/mappings")
        follow(driver, driver.find_element(By.PARTIAL_LINK_TEXT, "against the live CRM"))
        stages = driver.find_element(By.CSS_SELECTOR, "table.stages").text
        assert "Closed Won" in stages and "Won" in stages
        screenshot(driver, "stages")

        driver.get(server.url + "/audit")
        audit = driver.find_element(By.CSS_SELECTOR, "table.audit").text
        assert "retry" in audit and "discard" in audit and "explain" in audit
        screenshot(driver, "audit")
        page_sources = [driver.page_source]

        follow(driver, driver.find_element(By.XPATH, "//button[text()='Sign out']"))
        driver.get(server.url + "/runs")
        assert "/sign-in" in driver.current_url
    for text in page_sources:
        assert world.admin_secret not in text and world.viewer_secret not in text


def test_anonymous_and_read_only_users_are_refused_where_they_must_be(
    world: SyncedWorld,
) -> None:
    with world.console() as (server, store), chromium() as driver:
        letter = store.list_dead_letters(SF)[0]
        # anonymous: every page sends to sign in
        for path in ("/", "/runs", "/dead-letters", f"/records/{SF}/{letter.crm_id}", "/audit"):
            driver.get(server.url + path)
            assert "/sign-in" in driver.current_url, path
        driver.find_element(By.ID, "secret").send_keys("not-the-password-at-all")
        follow(driver, driver.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
        assert "not valid" in driver.find_element(By.CSS_SELECTOR, "p.problem").text

        # read-only: reads, sees no action, and the server refuses the actions
        driver.get(server.url + "/dead-letters")
        sign_in(driver, world.viewer_secret)
        assert "/dead-letters" in driver.current_url
        assert driver.find_elements(By.XPATH, "//button[text()='Discard']") == []
        assert driver.find_elements(By.XPATH, "//button[text()='Retry selected']") == []
        screenshot(driver, "dead_letters_read_only")
        driver.get(server.url + f"/records/{SF}/{letter.crm_id}")
        assert driver.find_elements(By.XPATH, "//button[text()='Retry']") == []
        driver.get(server.url + "/audit")
        assert "Not allowed" in driver.find_element(By.TAG_NAME, "h1").text
        screenshot(driver, "audit_read_only")
        with cookie_client(server, driver) as http:
            csrf = form_token(http.get("/dead-letters").text)
            retry = http.post("/dead-letters/retry", data={"csrf": csrf, "id": str(letter.id)})
            discard = http.post(f"/dead-letters/{letter.id}/discard", data={"csrf": csrf})
        assert retry.status_code == discard.status_code == 403
        unchanged = store.get_dead_letter(letter.id)
        assert unchanged == letter
        refused = [
            (e.actor, e.action)
            for e in ConsoleReads(store).audit_entries()
            if e.outcome == "refused"
        ]
        assert ("read_only", "retry") in refused and ("read_only", "discard") in refused
