"""The admin console in a real browser: Debian's Chromium, headless, driven by Playwright.

Run by tests/admin_console.rs against a running entradir:

    console_browser.py <console base URL> <admin token> <facts.json> <screenshot.png>

facts.json names what the tenant holds (set up by the Rust test). Every check reads the page as a person
would: visible text, table rows, the sign-in flow. Exits non-zero with a message naming the page and what was
missing; prints one line per page checked.
"""

import json
import sys

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def fail(page_name, what, text):
    sys.exit(f"{page_name}: {what}\n--- page text ---\n{text[:4000]}")


def expect(page_name, page, *needles):
    text = page.inner_text("body")
    for n in needles:
        if n not in text:
            fail(page_name, f"expected to read {n!r}", text)
    return text


def row_with(page, table_scope, *cells):
    """The text of the first table row (under table_scope) that contains every one of cells."""
    for row in page.locator(f"{table_scope} tr").all():
        t = row.inner_text()
        if all(c in t for c in cells):
            return t
    return None


def main():
    base, token, facts_path, shot = sys.argv[1:5]
    facts = json.load(open(facts_path))
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        # What would make a page look broken: a resource it loads failing (a page's own status, such as
        # 401 for the sign-in form, is meant), or the CSP refusing something the page itself uses.
        page.on(
            "response",
            lambda r: problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and r.request.resource_type != "document"
            else None,
        )
        page.on(
            "console",
            lambda m: problems.append(m.text)
            if m.type == "error" and ("Content Security Policy" in m.text or "Refused" in m.text)
            else None,
        )

        # Signing in: the console asks for the token, refuses a wrong one, accepts the right one.
        page.goto(base + "/console/")
        expect("sign-in", page, "Sign in", "Admin token")
        page.fill("#token", "not-the-token")
        page.click("button[type=submit]")
        expect("wrong token", page, "That is not the admin token")
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/console/")
        text = expect("sync", page, "Sync", "Fresh", "Last good sync", "applied", "Timeline")
        bars = page.locator("svg rect").count()
        if bars < facts["rounds"]:
            fail("sync", f"timeline shows {bars} rounds, expected at least {facts['rounds']}", text)
        if row_with(page, "main table", "applied") is None:
            fail("sync", "no applied round in the table", text)
        if row_with(page, "main table", "failed", facts["failed_error_words"]) is None:
            fail("sync", f"no failed round saying {facts['failed_error_words']!r} in the table", text)
        print(f"sync: {bars} rounds on the timeline")
        page.screenshot(path=shot, full_page=False)

        # Data quality: each problem the tenant was given is listed with the person it belongs to.
        page.click("nav >> text=Data quality")
        text = expect("quality", page, "Numbers that could not be parsed", "Numbers shared by several entries")
        if row_with(page, "#unparsable", facts["unparsable_person"], facts["unparsable_value"]) is None:
            fail("quality", f"{facts['unparsable_value']!r} of {facts['unparsable_person']} not listed", text)
        shared = row_with(page, "#shared", facts["shared_number"])
        if shared is None or not all(n in shared for n in facts["shared_by"]):
            fail("quality", f"{facts['shared_number']} shared by {facts['shared_by']} not listed", text)
        if row_with(page, "#csv", facts["csv_unmatched_upn"], str(facts["csv_unmatched_line"])) is None:
            fail("quality", f"unmatched CSV row {facts['csv_unmatched_upn']} not listed", text)
        clash = row_with(page, "#clashes", "sAMAccountName " + facts["clash_wanted"], facts["clash_holder"])
        if clash is None or facts["clash_person"] not in clash:
            fail("quality", f"the clash over {facts['clash_wanted']} is not listed with both people", text)
        if facts["no_number_person"] not in page.inner_text("#nonumber"):
            fail("quality", f"{facts['no_number_person']} not listed as having no number", text)
        print("quality: unparsable, shared, CSV, clash and no-number rows found")

        # Lookup tester: a number in national spelling finds its holder in LDAP and over HTTP, with the key.
        page.click("nav >> text=Lookup tester")
        page.fill("#q", facts["lookup_number_spelling"])
        page.click("form.lookup button")
        text = expect("lookup number", page, "Digit key", facts["lookup_number_key"], "HTTP lookup")
        if row_with(page, "#ldap", facts["lookup_number_person"], "digit key " + facts["lookup_number_key"]) is None:
            fail("lookup number", f"LDAP row for {facts['lookup_number_person']} with the key missing", text)
        if facts["lookup_number_person"] not in page.inner_text("#http"):
            fail("lookup number", "the HTTP lookup does not name the holder", text)
        # A name as typed on a phone: three letters.
        page.fill("#q", facts["lookup_name_letters"])
        page.click("form.lookup button")
        text = expect("lookup name", page, "(|(cn=" + facts["lookup_name_letters"] + "*)")
        for person in facts["lookup_name_people"]:
            if row_with(page, "#ldap", person) is None:
                fail("lookup name", f"{person} not among the LDAP entries", text)
        # A broken filter is answered in words, not with an error page.
        page.fill("#q", "")
        page.fill("#filter", "(cn=unbalanced")
        page.click("form.lookup button")
        expect("lookup bad filter", page, "cannot be read")
        print("lookup: number, name and bad filter behave")

        # Clients: the PBX account, the filter shape it sends, and the failed bind.
        page.click("nav >> text=Clients")
        text = expect("clients", page, "127.0.0.1", "account " + facts["account"], facts["shape"])
        if row_with(page, "main table", facts["failed_bind_name"], "wrong password") is None:
            fail("clients", f"failed bind as {facts['failed_bind_name']} not listed", text)
        print("clients: account, shape and failed bind found")

        # Signing out ends the session.
        page.click("text=Sign out")
        page.goto(base + "/console/quality")
        expect("signed out", page, "Admin token")
        browser.close()
    if problems:
        sys.exit(f"the browser reported errors (CSP or broken resources): {problems}")
    print("console: all pages checked")


if __name__ == "__main__":
    main()
