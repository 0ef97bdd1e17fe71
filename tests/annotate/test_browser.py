"""In a real browser: Debian's headless Chromium driven by Selenium through Debian's chromedriver.

An annotator logs in, reads the guidelines, annotates with the keyboard (every verdict, a rationale, undo,
skip), gets gold feedback in the qualification round and sees model text that tries to run script stay text;
an admin opens the dashboard and every plot loads. Screenshots are taken and their pixels checked.
"""

from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy import select

from directalign.annotate import auth
from directalign.annotate.db import Database
from directalign.annotate.loadtest import free_port, start_server
from directalign.annotate.models import Assignment, Item
from directalign.annotate.projects import Pair, ProjectOptions, create_project
from tests.annotate.conftest import PASSWORD

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="chromium/chromedriver not installed (apt-get install -y chromium chromium-driver)"),
]

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

HEADER = (0x24, 0x34, 0x4D)  # style.css header background
PLOT_BLUE = (0x4A, 0x7A, 0xB5)  # plots.py bar colour
ATTACK = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


@pytest.fixture
def site(tmp_path):
    db_path = str(tmp_path / "browser.db")
    db = Database(db_path)
    db.migrate()
    for name, role in (("ann", "annotator"), ("boss", "admin"), ("other", "annotator")):
        auth.add_user(db, name, PASSWORD, role)
    pairs = [Pair([{"role": "user", "content": f"Question {i}. {ATTACK}"}],
                  [{"role": "assistant", "content": f"Good answer {i} {ATTACK}"}],
                  [{"role": "assistant", "content": f"Poor answer {i}"}], f"mem:{i}") for i in range(8)]
    gold = [Pair([{"role": "user", "content": "What is 2 + 2?"}], [{"role": "assistant", "content": "4"}],
                 [{"role": "assistant", "content": "5"}], "gold:0", gold_answer=0)]
    create_project(db, "demo", "pairwise", pairs + gold,
                   ProjectOptions(overlap=2, qualification_size=1, qualification_pass=0.0), "mem")
    port = free_port()
    server = start_server(db_path, port, tmp_path / "server.log")
    yield f"http://127.0.0.1:{port}", db
    server.terminate()
    server.wait(30)
    db.dispose()


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _log_in(driver, base: str, username: str) -> None:
    driver.get(f"{base}/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    WebDriverWait(driver, 30).until(expected_conditions.title_is("directalign annotate"))


def _press(driver, key: str, wait_for_new_page: bool = True) -> None:
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.TAG_NAME, "body").send_keys(key)
    if wait_for_new_page:
        WebDriverWait(driver, 30).until(expected_conditions.staleness_of(old))


def _colours(path) -> set[tuple[int, int, int]]:
    from PIL import Image

    with Image.open(path) as image:
        return {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1 << 24)}


def _assignment_ids(driver) -> int:
    action = driver.find_element(By.ID, "vote-form").get_attribute("action")
    return int(action.rsplit("/", 1)[1])


def test_annotator_and_admin_in_headless_chromium(site, browser, tmp_path):
    base, db = site
    _log_in(browser, base, "ann")
    browser.get(f"{base}/projects/demo/annotate")
    assert browser.current_url.endswith("/projects/demo/guidelines")  # guidelines before the first item
    assert "How to compare two responses" in browser.find_element(By.ID, "guidelines").text
    browser.save_screenshot(str(tmp_path / "guidelines.png"))
    browser.find_element(By.ID, "start").click()

    # Qualification: the gold item comes first, and its feedback follows the vote.
    assert browser.find_element(By.ID, "prompt").text.endswith("What is 2 + 2?")
    correct_key = "1" if browser.find_element(By.ID, "response-a").text.endswith("4") else "2"
    _press(browser, "2" if correct_key == "1" else "1")
    assert "the expected answer was" in browser.find_element(By.ID, "flash").text

    # Model text that tries to run script is shown as text and runs nothing.
    prompt = browser.find_element(By.ID, "prompt").text
    assert "<script>document.title='pwned'</script>" in prompt and "<img src=x onerror=" in prompt
    assert browser.title != "pwned" and not browser.find_elements(By.CSS_SELECTOR, ".text img, .text script")
    browser.save_screenshot(str(tmp_path / "item.png"))

    voted = {}
    for key, verdict in (("1", "a"), ("2", "b"), ("3", "tie")):
        voted[_assignment_ids(browser)] = verdict
        _press(browser, key)
    last = _assignment_ids(browser)
    _press(browser, "r", wait_for_new_page=False)  # focus the rationale box: keys are text there
    browser.switch_to.active_element.send_keys("neither answer helps (1234)")
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    voted[last] = "both_bad"
    _press(browser, "4")
    _press(browser, "u")  # undo the both-bad vote: the same item comes back
    assert "taken back" in browser.find_element(By.ID, "flash").text and _assignment_ids(browser) == last
    _press(browser, "4")
    skipped = _assignment_ids(browser)
    _press(browser, "s")
    assert _assignment_ids(browser) != skipped
    _press(browser, "g")
    assert browser.current_url.endswith("/projects/demo/guidelines")

    with db.read() as session:
        rows = {a.id: a for a in session.scalars(select(Assignment))}
        gold_ids = set(session.scalars(select(Item.id).where(Item.gold_answer.is_not(None))))
    assert {i: rows[i].verdict for i in voted} == voted
    assert rows[last].rationale is None  # the rationale went with the undone vote; the new one has none
    assert rows[skipped].status == "skipped"
    assert [a.gold_correct for a in rows.values() if a.item_id in gold_ids] == [False]

    # The admin's dashboard: every plot loads.
    browser.delete_all_cookies()
    _log_in(browser, base, "boss")
    browser.get(f"{base}/projects/demo/dashboard")
    WebDriverWait(browser, 60).until(lambda d: d.execute_script(
        "const imgs = Array.from(document.querySelectorAll('img.plot'));"
        "return imgs.length === 5 && imgs.every(i => i.complete && i.naturalWidth > 300);"))
    assert browser.find_element(By.ID, "votes").text == "4"
    browser.save_screenshot(str(tmp_path / "dashboard.png"))

    for name in ("guidelines", "item", "dashboard"):
        colours = _colours(tmp_path / f"{name}.png")
        assert HEADER in colours and len(colours) > 50, name  # the page was drawn, header and text included
    assert PLOT_BLUE in _colours(tmp_path / "dashboard.png")  # the plots' bars are on screen
    assert json.loads(browser.execute_script(
        "return JSON.stringify(document.getElementById('status-json').textContent.length > 100)"))
