"""The README's path in a real browser: JupyterLab on 127.0.0.1 in a fresh copy of the
repository, driven by headless Chromium through its UI as a user drives it. Notebooks 01 ->
02 -> 03 -> 06 are opened in turn; in each, ``smoke = True`` is typed at the end of the
parameters cell, Run > Run All Cells runs it, and the notebook is saved (Ctrl+S). Then: no cell
shows an error, every image shown loaded (no broken one), the contact sheet (01) and Fig. 6
(06) are images, the user's versions are in study_out/notebooks/, and ``git status`` is clean.

Needs chromium and chromedriver (``bash scripts/ci/browser.sh start``) and selenium
(requirements.txt); skips, saying which is missing, without them. Screenshots of each notebook
at its end go to the test's temporary folder (``HIVA_BROWSER_SHOTS``: another folder)."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import git
from jupyter_server import api, jupyter

ROOT = Path(__file__).resolve().parents[1]
PATH = ["01_prepare_data", "02_train_stage1", "03_train_stage2", "06_figures"]
IMAGES = {"01_prepare_data": "sheet = contact_sheet_figure", "06_figures": "F.fig6"}  # shown by
RUN_LIMIT_S = 900  # one notebook at smoke size, on a loaded 2-core machine

pytestmark = pytest.mark.slow
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install -r requirements.txt)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("no headless browser: chromium and chromedriver are not installed (bash "
                "scripts/ci/browser.sh start)", allow_module_level=True)


@pytest.fixture(scope="module")
def lab(clone, tmp_path_factory):
    """JupyterLab serving the clone; every cell rendered (no windowing), no news pop-up."""
    tmp = tmp_path_factory.mktemp("lab")
    settings = tmp / "settings" / "@jupyterlab"
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}))
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    with jupyter(clone, tmp, app="jupyterlab", JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
                 JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _wait(what: str, check, limit: float, driver=None, shot: Path | None = None):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(1)
    if driver is not None and shot is not None:
        driver.save_screenshot(str(shot))
    raise AssertionError(f"timed out after {limit:.0f} s waiting for {what}")


def _panel(driver, name: str):
    """The notebook panel of ``name`` once it is the current tab of the main area."""
    current = driver.find_elements(
        By.CSS_SELECTOR, "#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel")
    if not any(tab.text == f"{name}.ipynb" for tab in current):
        return None
    panels = driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden)")
    return panels[0] if panels else None


def _menu(driver, top: str, item: str) -> None:
    """Click ``top`` in the menu bar, then ``item`` in its menu."""
    for label in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel"):
        if label.text == top:
            label.click()
            break
    _wait(f"menu item {item}", lambda: [e for e in driver.find_elements(
        By.CSS_SELECTOR, ".lm-Menu-itemLabel") if e.text == item], 20)[0].click()


def _set_smoke(driver, panel) -> None:
    """Type ``smoke = True`` as the last line of the parameters cell, as a user would."""
    cells = panel.find_elements(By.CSS_SELECTOR, ".jp-CodeCell")
    params = next(c for c in cells if "smoke = False" in c.text)
    params.find_element(By.CSS_SELECTOR, ".cm-content").click()
    editor = driver.switch_to.active_element
    editor.send_keys(Keys.CONTROL, Keys.END)
    editor.send_keys(Keys.ENTER, "smoke = True")
    _wait("the edit", lambda: "smoke = True" in params.text, 10)
    editor.send_keys(Keys.ESCAPE)


def _prompts(panel) -> list[str]:
    return [p.text for p in panel.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]


def _finished(panel) -> bool:
    prompts = _prompts(panel)
    return bool(prompts) and all(p.startswith("[") and p[1:-2].isdigit() for p in prompts)


def _errors(panel) -> list[str]:
    return [e.text[:2000] for e in panel.find_elements(
        By.CSS_SELECTOR, '[data-mime-type="application/vnd.jupyter.error"]')]


def _broken_images(driver, panel) -> list[str]:
    images = panel.find_elements(By.CSS_SELECTOR, "img")
    return [img.get_attribute("alt") or img.get_attribute("src")[:80] for img in images
            if not driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth > 0", img)]


def _cell_images(panel, marker: str) -> int:
    cell = next(c for c in panel.find_elements(By.CSS_SELECTOR, ".jp-CodeCell")
                if marker in c.find_element(By.CSS_SELECTOR, ".jp-InputArea").text)
    return len(cell.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img"))


def _run_notebook(driver, url: str, name: str, shots: Path) -> None:
    driver.get(f"{url}/lab/tree/notebooks/{name}.ipynb")
    panel = _wait(f"{name} to open", lambda: _panel(driver, name), 120, driver,
                  shots / f"{name}.png")
    _wait(f"{name}'s kernel", lambda: driver.find_elements(
        By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell"), 60)
    _wait(f"{name}'s kernel to be idle", lambda: "Idle" in driver.find_element(
        By.CSS_SELECTOR, "#jp-main-statusbar").text, 120, driver, shots / f"{name}.png")
    _set_smoke(driver, panel)
    _menu(driver, "Run", "Run All Cells")
    time.sleep(3)
    _wait(f"{name} to run (prompts {_prompts(panel)})",
          lambda: _finished(panel) or _errors(panel), RUN_LIMIT_S, driver,
          shots / f"{name}.png")
    time.sleep(2)  # the last outputs render
    driver.find_element(By.CSS_SELECTOR, "body").send_keys(Keys.CONTROL, "s")
    time.sleep(2)
    driver.save_screenshot(str(shots / f"{name}.png"))
    assert not _errors(panel), f"{name}: error output: {_errors(panel)}"
    assert _finished(panel), f"{name}: not every cell ran: {_prompts(panel)}"
    assert not _broken_images(driver, panel), f"{name}: broken images"
    if name in IMAGES:
        assert _cell_images(panel, IMAGES[name]) >= 1, f"{name}: no image from {IMAGES[name]}"
    for session in api(f"{url}/api/sessions"):  # the kernel's memory, for the next notebook
        api(f"{url}/api/sessions/{session['id']}", "DELETE")


def test_01_02_03_06_in_jupyterlab(clone, lab, browser, tmp_path):
    shots = Path(os.environ.get("HIVA_BROWSER_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    for name in PATH:
        _run_notebook(browser, lab, name, shots)
    for name in PATH:  # the user's versions, executed, beside the committed notebooks
        saved = json.loads((clone / "study_out" / "notebooks" / f"{name}.ipynb").read_text())
        assert any(c.get("outputs") for c in saved["cells"]), name
    assert git(clone, "status", "--porcelain") == ""
