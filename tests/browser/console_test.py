"""The console in a real browser: Debian's chromium driven by Playwright.

Starts `siyu demo --wecom-sim` on a small brand, then signs in as the admin (password),
as a store manager and as a guide (WeCom sign-in through the simulator), and checks
each page: it loads with no console error and no request to another host, a manager
cannot open another store's customer, the segment builder's live count equals the
API's, a campaign's dry run shows its reasons summing to the audience, a revealed
phone number lands in the audit log, and a guide confirms a task on a phone-sized
screen. Screenshots of every page go to SIYU_SCREENSHOTS (default target/console).

Usage: console_test.py PATH_TO_SIYU_BINARY
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("SIYU_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
SHOTS = os.environ.get("SIYU_SCREENSHOTS", "target/console")


class Demo:
    """A `siyu demo --wecom-sim` process and what its banner says."""

    def __init__(self, siyu):
        self.dir = tempfile.mkdtemp(prefix="siyu-browser-")
        env = dict(os.environ, SIYU_LOG="warn")
        env.pop("SIYU_ADMIN_TOKEN", None)
        env.pop("SIYU_ADMIN_PASSWORD", None)
        self.proc = subprocess.Popen(
            [siyu, "demo", "--customers", "2000", "--wecom-sim", "--data-dir", os.path.join(self.dir, "data"), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.banner = ""
        deadline = time.time() + 120
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit("siyu demo exited:\n" + self.banner)
            self.banner += line
            if "WeCom simulator on" in line:
                break
        self.base = re.search(r"serving on (http://\S+)", self.banner).group(1)
        self.password = re.search(r"sign in as admin / (\S+)", self.banner).group(1)
        self.token = re.search(r"admin token \(shown once; keep it\): (\S+)", self.banner).group(1)
        self.sim = re.search(r"WeCom simulator on (http://\S+)", self.banner).group(1)

    def api(self, method, path, body=None, base=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request((base or self.base) + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            return json.loads(text) if text else None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Watch:
    """Console errors and requests to other hosts on a page, failing at the end."""

    def __init__(self, page, base):
        self.errors = []
        host = urlparse(base).netloc
        page.on("console", lambda m: m.type == "error" and self.errors.append("console: " + m.text))
        page.on("pageerror", lambda e: self.errors.append("page error: " + str(e)))

        def on_request(req):
            netloc = urlparse(req.url).netloc
            if req.url.startswith("http") and netloc != host and not req.url.startswith(self.sim_prefix):
                self.errors.append("request to another host: " + req.url)

        self.sim_prefix = ""
        page.on("request", on_request)

    def expect(self, status):
        """Forgets the console's note of a failed request the test made on purpose."""
        self.errors = [e for e in self.errors if f"status of {status}" not in e]

    def check(self, what):
        assert not self.errors, f"{what}: " + "; ".join(self.errors)


def shot(page, name):
    os.makedirs(SHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


def sign_in_with_password(page, demo, watch):
    page.goto(demo.base + "/console")
    assert "/console/signin" in page.url, page.url
    shot(page, "00-signin")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert page.locator(".error").is_visible(), "a wrong password says so"
    watch.expect("401")  # the refused sign-in's answer
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", demo.password)
    page.click("button[type=submit]")
    page.wait_for_url(demo.base + "/console")


def sign_in_with_wecom(page, demo, userid):
    page.goto(demo.base + "/console/signin")
    page.click("#wecom-signin")
    # The simulator's authorize page lists the corp's staff, as WeCom's would ask.
    page.wait_for_selector("#staff")
    page.click(f"#staff a:text-is('{userid}')")
    page.wait_for_url(re.compile(re.escape(demo.base) + r"/console.*"))
    assert userid in page.inner_text("#who"), page.inner_text("#who")


def admin_pages(browser, demo):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page, demo.base)
    sign_in_with_password(page, demo, watch)
    shot(page, "01-overview")
    for path, name in [("/console/customers", "02-customers"), ("/console/segments", "04-segments"),
                       ("/console/campaigns", "05-campaigns"), ("/console/tasks", "07-tasks-hq"), ("/console/audit", "08-audit"),
                       ("/console/lost", "09-lost")]:
        page.goto(demo.base + path)
        assert page.locator("main h1").is_visible(), path
        shot(page, name)

    # A customer's profile: phones shown in full to HQ.
    page.goto(demo.base + "/console/customers")
    page.click("#customers tbody tr:first-child a")
    page.wait_for_selector("#timeline")
    shot(page, "03-customer")

    # The segment builder counts as you type, and agrees with the API.
    page.goto(demo.base + "/console/segments")
    rule = 'has(wecom) and count(Order Completed, 365d) >= 2'
    page.fill("#rule", rule)
    page.wait_for_function("document.getElementById('live-count').textContent.trim() !== '–'")
    shown = int(page.inner_text("#live-count").replace(",", ""))
    expected = demo.api("POST", "/api/v1/segments/preview", {"rule": rule})["count"]
    assert shown == expected, (shown, expected)
    page.fill("#rule", "count(Order Completed, 30 days) >= 2")
    page.wait_for_selector("#rule-error:not([hidden])")
    assert "column" in page.inner_text("#rule-error"), page.inner_text("#rule-error")
    watch.expect("400")  # the bad rule's answer
    shot(page, "04-segments-error")

    # The dry run: every member of the audience is either sent to or stopped for a reason.
    campaigns = demo.api("GET", "/api/v1/campaigns")
    assert campaigns, "the demo ships a campaign"
    page.goto(f"{demo.base}/console/campaigns/{campaigns[0]['id']}")
    audience = int(page.inner_text("#audience"))
    total = int(page.inner_text("#reasons-total"))
    assert audience == total and page.locator("#reasons tbody tr").count() >= 2, (audience, total)
    shot(page, "06-campaign-dry-run")
    watch.check("admin pages")
    page.close()


def manager_pages(browser, demo):
    staff = demo.api("GET", "/api/v1/staff")
    manager = next(s for s in staff if s["role"] == "store_manager")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page, demo.base)
    watch.sim_prefix = demo.sim  # the sign-in page is WeCom's (the simulator's)
    sign_in_with_wecom(page, demo, manager["userid"])
    shot(page, "10-manager-overview")
    page.goto(demo.base + "/console/customers")
    shot(page, "11-manager-customers")
    # Phone numbers are masked for a store manager, and revealing one is audited.
    page.click("#customers tbody tr:first-child a")
    page.wait_for_selector("#timeline")
    phone = page.locator("#traits dt:text-is('phone') + dd")
    if phone.count():
        assert "****" in phone.inner_text(), phone.inner_text()
        page.click("#reveal")
        page.wait_for_selector("#timeline")
        assert "****" not in page.locator("#traits dt:text-is('phone') + dd").inner_text()
        entries = [e for e in audit_rows(demo) if e["actor"] == manager["userid"]]
        assert entries and entries[0]["action"] == "reveal_phone", entries
    shot(page, "12-manager-customer")
    # Another store's customer does not exist for this manager.
    other = other_store_customer(demo, manager["store_id"])
    resp = page.goto(f"{demo.base}/console/customers/{other}")
    assert resp.status == 404, resp.status
    watch.expect("404")  # the page above is meant to 404
    watch.check("store manager pages")
    page.close()


def audit_rows(demo):
    return demo.api("GET", "/api/v1/audit")


def other_store_customer(demo, store):
    staff = demo.api("GET", "/api/v1/staff")
    guide = next(s for s in staff if s["role"] == "guide" and s["store_id"] != store and s["active_customers"] > 0)
    customers = demo.api("GET", f"/api/v1/staff/{guide['userid']}/customers")
    return customers["customers"][0]["profile_id"]


def guide_on_a_phone(browser, demo):
    staff = demo.api("GET", "/api/v1/staff")
    guide = next(s for s in staff if s["role"] == "guide" and s["active_customers"] > 0)
    # A WeCom broadcast to this guide's customers becomes a task for them.
    demo.api("POST", "/api/v1/segments", {"name": "browser_guide", "rule": f'owner.guide = "{guide["userid"]}"'})
    spec = {"name": "browser test", "audience": {"segment": "browser_guide"}, "channel": "wecom",
            "kind": "service", "content": "{{ traits.name | default: \"您好\" }}，新品到店，欢迎来试！"}
    campaign = demo.api("POST", "/api/v1/campaigns", spec)
    demo.api("POST", f"/api/v1/campaigns/{campaign['id']}/actions/schedule")
    deadline = time.time() + 30
    while time.time() < deadline and not [t for t in demo.api("GET", f"/api/v1/tasks?guide={guide['userid']}") if t["status"] == "open"]:
        time.sleep(0.5)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                  user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) wxwork/4.1.0")
    page = context.new_page()
    watch = Watch(page, demo.base)
    watch.sim_prefix = demo.sim
    sign_in_with_wecom(page, demo, guide["userid"])
    # A guide lands on their tasks, and the overview is not theirs.
    assert page.url.endswith("/console/tasks"), page.url
    shot(page, "20-guide-tasks")
    item = page.locator(".task .item").first
    delivery = item.get_attribute("data-delivery")
    item.locator("button[data-act=confirm]").click()
    page.wait_for_selector(f".item[data-delivery='{delivery}'].done")
    shot(page, "21-guide-confirmed")
    deliveries = demo.api("GET", f"/api/v1/tasks/{page.locator('.task').first.get_attribute('data-task')}")
    status = next(i["status"] for i in deliveries["items"] if str(i["delivery_id"]) == delivery)
    assert status == "confirmed", status
    page.goto(demo.base + "/console/customers")
    shot(page, "22-guide-customers")
    watch.check("guide pages")
    context.close()


def main():
    demo = Demo(sys.argv[1])
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            admin_pages(browser, demo)
            manager_pages(browser, demo)
            guide_on_a_phone(browser, demo)
            browser.close()
    finally:
        demo.stop()
    print(f"console browser test passed; screenshots in {SHOTS}")


if __name__ == "__main__":
    main()
