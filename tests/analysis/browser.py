"""Open a local HTML page in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)
and report what a person would see: console errors, sections that are empty or clipped, a screenshot."""
from __future__ import annotations

import os
import shutil

CHROMIUM = os.environ.get("KFX_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google's hosts, which this
# machine's closed network refuses (see the machine notes); --no-sandbox because tests run as root.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps", "--metrics-recording-only"]
VIEWPORT = {"width": 1280, "height": 900}

# For each <section>: its size, whether it holds text or a drawing, and every element inside it
# that sticks out of the page or of its SVG (clipped), or whose content overflows its own box.
_INSPECT = """() => {
  const page = document.documentElement.scrollWidth;
  const view = document.documentElement.clientWidth;
  const out = [];
  for (const s of document.querySelectorAll('section')) {
    const r = s.getBoundingClientRect();
    const svgs = [...s.querySelectorAll('svg')];
    const problems = [];
    for (const svg of svgs) {
      const box = svg.getBoundingClientRect();
      if (box.width < 10 || box.height < 10) problems.push('tiny svg ' + (svg.getAttribute('aria-label') || ''));
      for (const el of svg.querySelectorAll('text,rect,polyline,circle,line')) {
        const b = el.getBoundingClientRect();
        if (b.width === 0 && b.height === 0) continue;
        if (b.left < box.left - 2 || b.right > box.right + 2 || b.top < box.top - 2 || b.bottom > box.bottom + 2)
          problems.push('outside its svg: ' + el.tagName + ' ' + (el.textContent || '').slice(0, 40) +
                        ' in ' + (svg.getAttribute('aria-label') || ''));
      }
    }
    for (const el of s.querySelectorAll('*')) {
      const b = el.getBoundingClientRect();
      if (b.right > view + 1 && !el.closest('svg'))
        problems.push('beyond the window width (' + Math.round(b.right) + ' px): ' + el.tagName + ' ' +
                      (el.textContent || '').slice(0, 40));
    }
    out.push({id: s.id || s.className || s.querySelector('h2')?.textContent || '?',
              width: r.width, height: r.height, text: s.innerText.trim().length, svgs: svgs.length,
              problems: problems.slice(0, 10)});
  }
  return {sections: out, scrollWidth: page, clientWidth: document.documentElement.clientWidth};
}"""


def available() -> bool:
    if not os.path.exists(CHROMIUM):
        return False
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def inspect(path: str, screenshot: str) -> dict:
    """Load ``path`` (file://), collect console messages and page errors, inspect every section,
    and save a full-page screenshot to ``screenshot``."""
    from playwright.sync_api import sync_playwright

    messages, errors, requests = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("console", lambda m: messages.append((m.type, m.text)))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto("file://" + os.path.abspath(path))
            page.wait_for_load_state("load")
            result = page.evaluate(_INSPECT)
            os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
            page.screenshot(path=screenshot, full_page=True)
        finally:
            browser.close()
    result.update(console=messages, errors=errors,
                  requests=[u for u in requests if not u.startswith(("file://", "data:"))])
    return result


def keep(screenshot: str, directory: str) -> str:
    """Copy a screenshot into ``directory`` (the test artifacts folder); returns the copy's path."""
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, os.path.basename(screenshot))
    shutil.copyfile(screenshot, target)
    return target
