"""A clinician's visit to the results page, in a real browser (Debian's headless chromium,
driven by Selenium through Debian's chromedriver; nothing is downloaded).

Called by tests/web_browser.rs with the page's address, the base64 SHA-256 of the certificate's
public key (chromium trusts exactly that key and nothing else it would refuse), the password and
a folder for screenshots. It signs in with a wrong password, then the right one, opens the list
and the newest result, and checks what is rendered: the notice, the verdict text, the model's
SHA-256, and that the report sheet image loaded (its natural size), at a desktop width and at a
phone's. Prints one JSON line of what it saw; exits non-zero on the first check that fails.
"""

import argparse
import json
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def browser(spki: str, width: int, height: int, phone: bool) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    if phone:
        # A desktop window cannot be narrower than about 500 px: emulate the phone's viewport.
        opts.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1}})
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root; the page's own sandbox is what is tested
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        f"--ignore-certificate-errors-spki-list={spki}",
        "--force-device-scale-factor=1",
        "--lang=en-GB",
    ):
        opts.add_argument(a)
    driver = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def check(cond: bool, what: str) -> None:
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def sign_in(b, url: str, password: str) -> None:
    """Submit the sign-in form and wait until the answer's page has loaded."""
    b.get(url + "/signin")
    old = b.find_element(By.TAG_NAME, "html")
    field = b.find_element(By.ID, "password")
    field.clear()
    field.send_keys(password)
    b.find_element(By.CSS_SELECTOR, "form.signin button").click()
    wait_for_new_page(b, old)


def wait_for_new_page(b, old) -> None:
    def replaced(_):
        try:
            old.tag_name  # raises once the old document is gone
            return False
        except Exception:
            return b.execute_script("return document.readyState") == "complete"

    WebDriverWait(b, 20).until(replaced)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--spki", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    seen = {}
    for name, (w, h) in {"desktop": (1280, 900), "phone": (390, 844)}.items():
        b = browser(a.spki, w, h, name == "phone")
        try:
            b.get(a.url + "/")
            check(b.current_url.endswith("/signin"), f"{name}: an unsigned visit lands on the sign-in page ({b.current_url})")
            check("research use only, not a diagnosis" in b.page_source, f"{name}: notice on the sign-in page")
            if name == "desktop":
                sign_in(b, a.url, "not the password")
                alert = b.find_element(By.CSS_SELECTOR, "[role=alert]").text
                check(alert == "Wrong password.", f"wrong password refused, said {alert!r}")
                b.save_screenshot(os.path.join(a.out, "signin-wrong-password.png"))
            sign_in(b, a.url, a.password)
            here = b.current_url
            check(here.rstrip("/") == a.url, f"{name}: signed in, on the list ({here})")
            rows = b.find_elements(By.CSS_SELECTOR, "#results tbody tr")
            check(len(rows) >= 1, f"{name}: the list shows a result")
            verdict = rows[0].find_element(By.CSS_SELECTOR, ".verdict")
            check(verdict.is_displayed(), f"{name}: the verdict is visible")
            listed = verdict.text
            seen[f"{name}_list_verdict"] = listed
            seen[f"{name}_list_verdict_key"] = verdict.get_attribute("data-verdict")
            b.save_screenshot(os.path.join(a.out, f"list-{name}.png"))
            old = b.find_element(By.TAG_NAME, "html")
            rows[0].find_element(By.CSS_SELECTOR, "a").click()
            wait_for_new_page(b, old)
            check("/result/" in b.current_url, f"{name}: opened a result ({b.current_url})")
            big = b.find_element(By.CSS_SELECTOR, ".verdict.big")
            seen[f"{name}_result_verdict"] = big.text
            check(big.text == listed, f"{name}: the same verdict on the result page ({big.text!r} vs {listed!r})")
            img = b.find_element(By.ID, "sheet")
            nat = b.execute_script("return [arguments[0].complete, arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
            check(nat[0] and nat[1] > 0 and nat[2] > 0, f"{name}: the report sheet loaded ({nat})")
            seen[f"{name}_sheet_px"] = nat[1:]
            page_w = b.execute_script("return document.documentElement.scrollWidth")
            inner = b.execute_script("return window.innerWidth")
            check(inner == w, f"{name}: the viewport is {w} px wide ({inner})")
            wide = b.execute_script(
                "return Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)"
                ".slice(-4).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))"
            )
            check(page_w <= w + 1, f"{name}: no sideways scrolling ({page_w} px wide in a {w} px window; widest: {wide})")
            seen[f"{name}_model"] = b.find_element(By.ID, "model").text
            check("research use only, not a diagnosis" in b.page_source, f"{name}: notice on the result page")
            full = max(h, b.execute_script("return document.documentElement.scrollHeight"))
            b.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": w, "height": full, "deviceScaleFactor": 1, "mobile": name == "phone"},
            )
            b.save_screenshot(os.path.join(a.out, f"result-{name}.png"))
        finally:
            b.quit()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
