"""JupyterLab in a real browser, as a student meets it. Notebook 00 (smoke profile): every cell runs, and the
study explorer widget renders and answers a change of its slider. The course kit: the student version of the
first assignment opens, its first exercise fails its test until the student writes the answer, then passes.
Headless Chromium through selenium, JupyterLab on a free loopback port. The screenshot the first test takes is
the one in docs/jupyterlab_explorer.png."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from medlib.paths import REPO_ROOT

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _needs_browser():
    missing = [n for n, p in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not p]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing and os.environ.get("CI"):
        pytest.fail(f"CI must install {missing} (.ci/run does)")
    if missing:
        pytest.skip(f"needs {missing}: apt-get install chromium chromium-driver; pip install selenium")


def _smoke_copy(folder, output_dir) -> str:
    """Notebook 00 with the smoke profile and an output folder of the test's own."""
    nb = json.loads((REPO_ROOT / "notebooks" / "00_data_tour.ipynb").read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"]).replace('profile: str = "tiny"', 'profile: str = "smoke"')
            src = src.replace('output_dir: str = ""', f"output_dir: str = {str(output_dir)!r}")
            cell["source"] = src
    (folder / "00_data_tour.ipynb").write_text(json.dumps(nb))
    return "00_data_tour.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer at {url}")


@contextlib.contextmanager
def _lab(tmp_path, root, notebook: str):
    """A JupyterLab server on `root` and a headless browser with `notebook` open and its kernel idle."""
    _needs_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    port, token = _free_port(), "medlib-test-token"
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings")}
    env.pop("PAPERMILL_EXECUTION", None)  # a student's kernel: widgets, not static figures
    lab = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                            f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                            "--LabApp.expose_app_in_browser=True", "--ServerApp.port_retries=0", "--allow-root"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(arg)
    driver = None
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", lab)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.get(f"http://127.0.0.1:{port}/lab/tree/{notebook}?token={token}")
        WebDriverWait(driver, 240, poll_frequency=1).until(_kernel_idle)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        lab.terminate()
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lab.kill()


def _kernel_idle(driver) -> bool:
    return driver.execute_script(
        "const a = window.jupyterapp; const w = a && a.shell.currentWidget;"
        "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
        " && w.sessionContext.session.kernel.status === 'idle');")


def test_the_study_explorer_renders_and_responds_in_jupyterlab(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    work = tmp_path / "lab"
    work.mkdir()
    name = _smoke_copy(work, tmp_path / "run")
    with _lab(tmp_path, work, name) as driver:
        wait = WebDriverWait(driver, 240, poll_frequency=1)
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
        slider = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
                            or d.find_elements(By.CSS_SELECTOR, ".widget-slider input"))[0]

        def shown():  # the explorer's current figure, and the study it names
            imgs = driver.find_elements(By.CSS_SELECTOR, ".widget-interact .jp-OutputArea-output img")
            return imgs[-1].get_attribute("src") if imgs else None

        before = wait.until(lambda d: shown())
        readout = driver.find_elements(By.CSS_SELECTOR, ".widget-slider .widget-readout")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", slider)
        slider.click()
        slider.send_keys(Keys.ARROW_RIGHT)
        wait.until(lambda d: shown() not in (None, before))
        assert not readout or readout[0].text.strip() == "1"
        errors = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        assert not [e.text for e in errors if "Traceback" in e.text or "Error" in e.text]
        shot = tmp_path / "jupyterlab_explorer.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("MEDLIB_UPDATE_SCREENSHOT"):
            shutil.copy(shot, REPO_ROOT / "docs" / "jupyterlab_explorer.png")


def _run_cell(driver, index: int) -> list[dict]:
    """Runs cell `index` of the open notebook as the student would (select it, run it) and returns its outputs."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("const n = window.jupyterapp.shell.currentWidget.content; n.activeCellIndex = arguments[0];"
                          "window.jupyterapp.commands.execute('notebook:run-cell');", index)
    wait = WebDriverWait(driver, 240, poll_frequency=0.5)
    wait.until(lambda d: d.execute_script(
        "const c = window.jupyterapp.shell.currentWidget.content.widgets[arguments[0]];"
        "return c.model.executionCount !== null && !c.hasClass('jp-mod-running') && c.promptNode.textContent.indexOf('*') < 0;",
        index) and _kernel_idle(d))
    return driver.execute_script("return window.jupyterapp.shell.currentWidget.content.widgets[arguments[0]].model.outputs.toJSON();",
                                 index)


def test_a_student_opens_an_exercise_fails_its_test_then_answers_it(tmp_path):
    """The student version of assignment 1, as `make course` releases it: the implement exercise's test fails with
    the blank the student must fill, and passes once the student writes the rule into the cell."""
    from tests.test_course import COURSE, _nbgrader

    name = "01_medblip"
    course = tmp_path / "course"
    shutil.copytree(COURSE, course, ignore=shutil.ignore_patterns("release", "submitted", "autograded", "feedback", "gradebook.db"))
    done = _nbgrader(course, "generate_assignment", name, "--force")
    assert done.returncode == 0, done.stderr[-3000:]
    released = course / "release" / name
    cells = json.loads((released / f"{name}.ipynb").read_text())["cells"]
    ids = [c["metadata"].get("nbgrader", {}).get("grade_id") for c in cells]
    answer, test = ids.index("medblip_rule"), ids.index("medblip_rule_tests")
    assert "NotImplementedError" in "".join(cells[answer]["source"])  # the released cell is the student's blank
    source = json.loads((COURSE / "source" / name / f"{name}.ipynb").read_text())["cells"][answer]["source"]
    solution = "".join(line for line in source if "### " not in line)

    with _lab(tmp_path, released, f"{name}.ipynb") as driver:
        assert not [o for o in _run_cell(driver, 1) if o["output_type"] == "error"]  # the assignment's setup cell
        _run_cell(driver, answer)
        failed = [o for o in _run_cell(driver, test) if o["output_type"] == "error"]
        assert failed and failed[0]["ename"] == "NotImplementedError"
        driver.execute_script("window.jupyterapp.shell.currentWidget.content.widgets[arguments[0]].model.sharedModel.setSource(arguments[1]);",
                              answer, solution)
        assert not [o for o in _run_cell(driver, answer) if o["output_type"] == "error"]
        assert not [o for o in _run_cell(driver, test) if o["output_type"] == "error"]
