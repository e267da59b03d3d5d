"""What a person sees in TensorBoard, checked in a real (headless) Chromium.

A tiny sweep (two decoders), and beside it one forced "yellow image" run, are trained;
TensorBoard serves it, and selenium opens the HPARAMS table, the custom dashboard and the
IMAGES tab the way a user would. Each check saves a screenshot into the artefact folder (env
SEG_TEST_ARTIFACTS, default <repo>/test-artifacts/); a failed wait saves *_failed.png and says
what it waited for, with the start of the page's visible text.

TensorBoard's pages are Polymer/Angular components inside shadow roots, which
document.body.innerText and CSS selectors do not enter: every query below goes through one JS
helper (_JS) that walks the composed tree (light children + shadow roots), skips what is not
rendered, and returns visible text boxes (text, position, whether an ancestor clips it) or the
elements matching a selector.

Needs chromium + chromedriver (apt: chromium chromium-driver; .ci/run installs them) and
selenium (the dev extra). Without them: a failure under CI (env CI set), else a skip.
"""

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import warnings
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from conftest import ROOT

# one worker runs the module, so its module fixtures (a real sweep, a browser) are built once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tensorboard_ui")]

TINY = ["trainer.epochs=2", "data.num_train=32", "data.num_val=8", "data.image_size=32",
        "trainer.batch_size=8"]
# README's screenshots are made by this test with longer training, so that the healthy panel is
# healthy: SEG_TB_UI_OVERRIDES="trainer.epochs=10 data.num_train=512 data.image_size=96"
TINY += os.environ.get("SEG_TB_UI_OVERRIDES", "").split()
WAIT_S = 60  # every wait below is bounded by this


# ---------------------------------------------------------------------------------------------
# helpers


def artefact_dir() -> Path:
    out = Path(os.environ.get("SEG_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


def to_precision(value: float, digits: int = 5) -> str:
    """JavaScript's Number.prototype.toPrecision(digits), which TensorBoard's HPARAMS table
    uses to print numbers: 0.3108054995 -> '0.31081', 0.5 -> '0.50000', 0.000610352 ->
    '0.00061035', 1.5e-7 -> '1.5000e-7'. Ties round up (away from zero), on the exact
    binary value, as the spec says."""
    if value == 0:
        return "0." + "0" * (digits - 1) if digits > 1 else "0"
    sign = "-" if value < 0 else ""
    d = abs(Decimal(value))
    e = d.adjusted()
    n = d.scaleb(digits - 1 - e).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    if n >= 10 ** digits:  # 0.999996 -> 1.0000: one more digit before the point
        e += 1
        n = d.scaleb(digits - 1 - e).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    m = str(int(n))
    if e < -6 or e >= digits:
        mant = m[0] + ("." + m[1:] if digits > 1 else "")
        return f"{sign}{mant}e{'+' if e >= 0 else '-'}{abs(e)}"
    if e >= 0:
        whole, frac = m[:e + 1], m[e + 1:]
        return sign + whole + ("." + frac if frac else "")
    return sign + "0." + "0" * (-e - 1) + m


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    """CI-safe settings for the training and TensorBoard subprocesses: CPU only, quiet TF, no
    display, unbuffered output."""
    env = dict(os.environ)
    env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
               MPLBACKEND="Agg", HYDRA_FULL_ERROR="1")
    env.pop("DISPLAY", None)
    return env


def _train(*args, timeout=900, code=0):
    done = subprocess.run([sys.executable, "scripts/train.py", *map(str, args)], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == code, (f"scripts/train.py {' '.join(map(str, args))} exited with "
                                  f"{done.returncode}\n{done.stdout[-2000:]}\n"
                                  f"{done.stderr[-3000:]}")
    return done


def _browser_missing() -> list[str]:
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the python package selenium (pip install -e '.[dev]')")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        missing.append("chromium")
    if not shutil.which("chromedriver"):
        missing.append("chromedriver")
    return missing


# One helper for every query, because TensorBoard's UI lives in (nested) shadow roots.
# arguments: mode, arg, root (an element to search inside, else the whole page).
# mode "boxes": the visible text boxes in document order: {t, x, y, w, h, clipped} where
#   clipped = an ancestor with overflow != visible (a table cell with an ellipsis, a scroller)
#   cuts part of the text off, i.e. a person does not see all of it.
# mode "elements": the rendered elements matching the CSS selector `arg`.
# mode "scroll": scroll the text box `arg` (one that "boxes" returned) into view.
_JS = r"""
const [mode, arg, root] = arguments;
const SKIP = new Set(['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE', 'HEAD', 'TITLE']);
function shown(el) {
  if (el.checkVisibility) return el.checkVisibility({visibilityProperty: true});
  return el.getClientRects().length > 0;
}
function walk(node, onElement, onText) {  // the composed tree: light children + shadow roots
  for (const c of node.childNodes) {
    if (c.nodeType === 3) { if (onText) onText(c); continue; }
    if (c.nodeType !== 1 || SKIP.has(c.tagName) || !shown(c)) continue;
    if (onElement) onElement(c);
    if (c.shadowRoot) walk(c.shadowRoot, onElement, onText);
    walk(c, onElement, onText);
  }
}
function walkFrom(onElement, onText) {
  if (!root) return walk(document, onElement, onText);
  if (root.shadowRoot) walk(root.shadowRoot, onElement, onText);
  walk(root, onElement, onText);
}
function composedParent(n) {
  if (n.assignedSlot) return n.assignedSlot;
  const p = n.parentNode;
  return p && p.nodeType === 11 ? p.host : p;
}
function clipped(textNode, r) {
  for (let el = composedParent(textNode); el && el.nodeType === 1; el = composedParent(el)) {
    const cs = getComputedStyle(el);
    if (cs.overflowX === 'visible' && cs.overflowY === 'visible') continue;
    const c = el.getBoundingClientRect();
    if (r.left < c.left - 1 || r.right > c.right + 1 || r.top < c.top - 1 ||
        r.bottom > c.bottom + 1) return true;
  }
  return false;
}
function boxes() {
  const out = [];
  walkFrom(null, (tn) => {
    const t = tn.textContent.replace(/\s+/g, ' ').trim();
    if (!t) return;
    const range = document.createRange();
    range.selectNodeContents(tn);
    const r = range.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return;
    out.push({t: t, x: r.left, y: r.top, w: r.width, h: r.height, clipped: clipped(tn, r),
              node: tn});
  });
  return out;
}
if (mode === 'boxes') return boxes().map(b => { const {node, ...rest} = b; return rest; });
if (mode === 'elements') {
  const out = [];
  walkFrom((el) => { if (el.matches(arg)) out.push(el); }, null);
  return out;
}
if (mode === 'scroll') {  // arg: a box from "boxes"; scroll the same text there into view
  const d = (b) => Math.hypot(b.x - arg.x, b.y - arg.y);
  const b = boxes().filter(b => b.t === arg.t).sort((a, c) => d(a) - d(c))[0];
  if (b) b.node.parentElement.scrollIntoView({block: 'nearest', inline: 'nearest'});
  return !!b;
}
throw new Error('unknown mode ' + mode);
"""


class Page:
    """A TensorBoard page in the browser, queried through _JS."""

    def __init__(self, driver):
        self.driver = driver

    def open(self, url: str):
        self.driver.get("about:blank")  # a full load each time, not a hash change
        self.driver.get(url)

    def boxes(self, root=None) -> list[dict]:
        """The visible text boxes (of the page, or inside element `root`)."""
        return self.driver.execute_script(_JS, "boxes", None, root)

    def elements(self, selector: str, root=None) -> list:
        """The rendered elements matching `selector` (shadow roots included)."""
        return self.driver.execute_script(_JS, "elements", selector, root)

    def scroll_to(self, box: dict) -> bool:
        """Scroll the text box `box` (from boxes()) into view, e.g. a column off to the right."""
        return self.driver.execute_script(_JS, "scroll", box, None)

    def text(self) -> str:
        return " ".join(b["t"] for b in self.boxes())

    def wait(self, name: str, expected: str, probe, timeout: float | None = None):
        """Poll probe() (every 0.5 s; the page is reloaded every 20 s in case it rendered
        before TensorBoard had read the logs) until it returns something truthy, and return
        that. On timeout: save <name>_failed.png and fail, saying what was expected."""
        timeout = WAIT_S if timeout is None else timeout
        start = last_reload = time.monotonic()
        error = None
        while time.monotonic() - start < timeout:
            try:
                found = probe()
                if found:
                    return found
            except Exception as e:  # noqa: BLE001  (stale elements while the page renders)
                error = e
            if time.monotonic() - last_reload > 20:
                self.driver.refresh()
                last_reload = time.monotonic()
            time.sleep(0.5)
        shot = artefact_dir() / f"{name}_failed.png"
        self.driver.save_screenshot(str(shot))
        try:
            text = self.text()
        except Exception as e:  # noqa: BLE001
            text = f"(page text unavailable: {e})"
        pytest.fail(f"{expected}: not seen within {timeout:.0f} s at {self.driver.current_url}"
                    + (f" (last probe error: {error!r})" if error else "")
                    + f"; screenshot {shot}\npage text: {text[:1500]}", pytrace=False)

    def screenshot(self, name: str) -> Path:
        shot = artefact_dir() / f"{name}.png"
        self.driver.save_screenshot(str(shot))
        return shot


def _start_check(name: str):
    for stale in (f"{name}.png", f"{name}_failed.png"):
        (artefact_dir() / stale).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def browser_paths():
    """(chromium, chromedriver), or a skip (a failure under CI) naming what is missing."""
    missing = _browser_missing()
    if missing:
        msg = (f"the TensorBoard UI test needs a browser: missing {', '.join(missing)}; "
               ".ci/run installs `chromium chromium-driver` from apt "
               "(apt-get install chromium chromium-driver)")
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return (shutil.which("chromium") or shutil.which("chromium-browser"),
            shutil.which("chromedriver"))


@pytest.fixture(scope="module")
def sweep(browser_paths, tmp_path_factory):
    """<tmp>/sweep: jobs 0_decoder=upsample... and 1_decoder=deconv..., plus yellow/ (the
    broken set-up forced through). browser_paths first: no training when the check would skip."""
    out = tmp_path_factory.mktemp("tbui") / "sweep"
    _train("-m", "+decoder=upsample,deconv", *TINY, "logging.num_panels=2",
           f"hydra.sweep.dir={out}")
    # beside the sweep, not in it: TensorBoard serves the sweep alone, as the README says
    yellow = out.parent / "yellow"
    _train("+experiment=yellow_image", "diagnostics.preflight=warn", *TINY,
           f"hydra.run.dir={yellow}", code=4)  # 4: finished, collapsed
    # a second run on its own (the board's folder: the sweep and two single runs)
    _train(*TINY, "trainer.learning_rate=0.003", f"hydra.run.dir={out.parent / 'lr'}")
    jobs = sorted(p.parent for p in out.glob("[0-9]*_*/metrics.json"))
    assert len(jobs) == 2, sorted(p.name for p in out.iterdir())
    for job in jobs:
        assert "val_mean_iou" in json.loads((job / "metrics.json").read_text()), job
    # the panels a person would open next to TensorBoard, as artefacts
    healthy = next(j for j in jobs if "decoder=upsample" in j.name)
    for src, dst in ((healthy, "panel_healthy.png"), (yellow, "panel_collapsed.png")):
        panels = sorted((src / "panels").glob("epoch_*.png"))
        assert panels, f"no panel in {src}"
        shutil.copyfile(panels[-1], artefact_dir() / dst)  # the last epoch's
    return out, jobs


@pytest.fixture(scope="module")
def tensorboard(sweep):
    """The base URL of a TensorBoard serving the sweep; stopped at the end."""
    out, jobs = sweep
    port = _free_port()
    log = out.parent / "tensorboard.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(out),
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=_env(), stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    expected = {f"{j.name}/tb/{split}" for j in jobs for split in ("train", "validation")}
    try:
        deadline = time.monotonic() + WAIT_S
        runs = []
        while True:
            if server.poll() is not None:
                pytest.fail(f"tensorboard exited with {server.returncode}:\n"
                            f"{log.read_text()[-3000:]}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{base}/data/runs", timeout=5) as r:
                    runs = json.loads(r.read())
                if expected <= set(runs):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"tensorboard at {base} did not list the runs {sorted(expected)} "
                            f"within {WAIT_S} s; it lists {runs}\n{log.read_text()[-3000:]}",
                            pytrace=False)
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def page(browser_paths, tensorboard):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_paths
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1600,1000"):
        options.add_argument(arg)
    options.binary_location = chromium
    # an explicit driver path: selenium never tries to download one
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield Page(driver)
    finally:
        driver.quit()


# ---------------------------------------------------------------------------------------------
# the checks


def test_to_precision_reproduces_javascript():
    cases = {0.3108054995536804: "0.31081", 0.5: "0.50000", 0.000610351: "0.00061035",
             0.1975: "0.19750", 0.999996: "1.0000", 1.5e-7: "1.5000e-7", 32.0: "32.000",
             537905.0: "5.3791e+5", 0.0: "0.0000", -0.25: "-0.25000", 0.125: "0.12500"}
    assert {v: to_precision(v) for v in cases} == cases
    assert to_precision(0.125, 2) == "0.13"  # a tie on the exact value: JS rounds up


def test_hparams_table_shows_val_mean_iou_per_trial(page, tensorboard, sweep):
    """HPARAMS, table view: a `val_mean_iou` column, each trial named by its swept setting,
    and in its row, under val_mean_iou, the job's metrics.json val_mean_iou printed the way
    TensorBoard prints numbers. A Trial ID that the column cuts off on screen (TensorBoard's
    Trial ID column is ~150 px wide: 'decoder=upsam…') is reported as a warning."""
    _, jobs = sweep
    name = "tensorboard_hparams"
    _start_check(name)
    page.open(f"{tensorboard}/#hparams")
    trial_header = page.wait(name, "the HPARAMS table view (a 'Trial ID' column header)",
                             lambda: next((b for b in page.boxes() if b["t"] == "Trial ID"),
                                          None))

    def column_header():  # in the table's header row, not the filter panel on the left
        mid = trial_header["y"] + trial_header["h"] / 2
        return next((b for b in page.boxes() if b["t"] == "val_mean_iou"
                     and b["x"] > trial_header["x"] and b["y"] <= mid <= b["y"] + b["h"]),
                    None)

    header = page.wait(name, "a column header 'val_mean_iou' in the HPARAMS table",
                       column_header)
    mid = trial_header["y"] + trial_header["h"] / 2
    assert any(b["t"] == "decoder.name" and b["x"] > trial_header["x"]
               and b["y"] <= mid <= b["y"] + b["h"] for b in page.boxes()), \
        "the swept setting decoder.name is not among the columns shown"
    cut_off = []
    for job in jobs:
        setting = re.search(r"decoder=(\w+)", job.name).group(1)  # named "deconv seed=1 ..."
        value = to_precision(json.loads((job / "metrics.json").read_text())["val_mean_iou"])

        def row(setting=setting, value=value):
            boxes = page.boxes()
            for trial in boxes:  # a cell of the Trial ID column naming the setting
                if not (setting in trial["t"] and abs(trial["x"] - trial_header["x"]) < 40
                        and trial["y"] > trial_header["y"]):
                    continue
                mid = trial["y"] + trial["h"] / 2
                if any(b["t"] == value and b["y"] <= mid <= b["y"] + b["h"]
                       and header["x"] - 40 <= b["x"] + b["w"] / 2
                       <= header["x"] + max(header["w"], 100) + 40 for b in boxes):
                    return trial
            return None

        trial = page.wait(name, f"a row whose Trial ID contains {setting!r} and whose "
                                f"val_mean_iou reads {value} (metrics.json of {job.name})", row)
        if trial["clipped"]:
            cut_off.append(trial["t"])
    page.scroll_to(header)
    page.screenshot(name)
    if cut_off:
        warnings.warn(f"HPARAMS: the Trial ID column cuts off {cut_off} on screen "
                      f"(see {name}.png)", UserWarning, stacklevel=1)


def test_custom_dashboard_draws_miou_chart(page, tensorboard):
    """CUSTOM SCALARS: the chart `mIoU (train and validation)` is shown and draws a line."""
    name = "tensorboard_dashboard"
    _start_check(name)
    title = "mIoU (train and validation)"
    page.open(f"{tensorboard}/#custom_scalars")

    def card():
        for c in page.elements("tf-custom-scalar-multi-line-chart-card, "
                               "tf-custom-scalar-margin-chart-card"):
            if any(b["t"] == title for b in page.boxes(c)):
                return c
        return None

    def drawn_lines():
        # the card's vz-line-chart2 is drawn by Plottable as SVG: one <path> per run in
        # div.line-plot (div.line-plot.ghost holds the unsmoothed copies); a drawn line has
        # at least two points (a "L" in its d attribute) and a non-empty bounding box.
        paths = page.elements("div.line-plot:not(.ghost) path", card())
        return sum(page.driver.execute_script(
            "const p = arguments[0]; const b = p.getBBox();"
            "return /[LlCcHhVv]/.test(p.getAttribute('d') || '') && b.width + b.height > 0",
            path) for path in paths)

    page.wait(name, f"a custom-scalars chart titled {title!r} (the custom dashboard's "
                    "layout, category 'Which run wins')", card)
    page.wait(name, f"a line drawn in the chart {title!r} (an SVG <path> in its line plot)",
              drawn_lines)
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", card())
    page.screenshot(name)


def _blob_tag(src: str) -> str | None:
    """The tag of an images-plugin URL: .../individualImage?blob_key=<base64 JSON
    [experiment, run, tag, step index, sample]>."""
    key = urllib.parse.parse_qs(urllib.parse.urlparse(src).query).get("blob_key", [""])[0]
    try:
        return json.loads(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)))[2]
    except (ValueError, IndexError, TypeError):
        return None


def test_images_tab_shows_predictions(page, tensorboard):
    """IMAGES: a `predictions` image is loaded and shown."""
    name = "tensorboard_images"
    _start_check(name)
    page.open(f"{tensorboard}/#images")

    def loaded_predictions():
        found = []
        for img in page.elements("img"):
            src, width = page.driver.execute_script(
                "const i = arguments[0]; return [i.src, i.complete ? i.naturalWidth : 0]", img)
            if width > 0 and ("predictions" in src or (
                    "individualImage" in src and _blob_tag(src) == "predictions")):
                found.append(src)
        return found

    page.wait(name, "a loaded `predictions` image (an <img> of the images plugin's tag "
                    "'predictions' with naturalWidth > 0)", loaded_predictions)
    page.wait(name, "the tag name 'predictions' on the image card",
              lambda: any(b["t"] == "predictions" for b in page.boxes()))
    page.screenshot(name)
    # legible where it is shown: the panel's text (titles, legend), scaled down to the card
    from seg.viz import text_px

    for img in page.elements("img"):
        natural, shown = page.driver.execute_script(
            "const i = arguments[0]; return [i.naturalWidth, i.getBoundingClientRect().width]",
            img)
        if natural and shown and _blob_tag(img.get_attribute("src") or "") == "predictions":
            assert text_px(natural) * shown / natural >= 10, (
                f"the panel's text is {text_px(natural) * shown / natural:.1f} px high on the "
                f"card ({natural} px wide, shown {shown:.0f} px): see {name}.png")


def _board(folder: Path, port: int, log: Path) -> tuple[subprocess.Popen, str]:
    """scripts/board.py over folder, and the URL it prints (once TensorBoard answers)."""
    server = subprocess.Popen([sys.executable, "scripts/board.py", str(folder), "--port",
                               str(port)], cwd=ROOT, env=_env(), stdout=open(log, "w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 2 * WAIT_S
    while time.monotonic() < deadline:
        found = re.search(r"open (http://127\.0\.0\.1:\d+/#hparams)", log.read_text())
        if found:
            return server, found.group(1)
        if server.poll() is not None:
            break
        time.sleep(0.5)
    server.kill()
    pytest.fail(f"scripts/board.py printed no URL:\n{log.read_text()[-3000:]}", pytrace=False)


def test_board_opens_on_the_runs_ranked(page, sweep):
    """scripts/board.py over the sweep and the two runs beside it: the page its URL opens shows
    the runs ranked by val mIoU (the Trial IDs 01, 02, ... in the order of their metrics.json),
    the keys that differ as columns, and the yellow-image run's head and loss keys."""
    name = "board_hparams"
    _start_check(name)
    out, jobs = sweep
    runs = [*jobs, out.parent / "yellow", out.parent / "lr"]
    mious = {r: json.loads((r / "metrics.json").read_text())["val_mean_iou"] for r in runs}
    ranked = sorted(runs, key=lambda r: -mious[r])
    server, url = _board(out.parent, _free_port(), out.parent / "board.log")
    try:
        page.open(url)

        def table():
            boxes = page.boxes()
            header = next((b for b in boxes if b["t"] == "Trial ID"), None)
            rows = sorted((b for b in boxes if header and re.match(r"\d\d ", b["t"])
                           and abs(b["x"] - header["x"]) < 40), key=lambda b: b["y"])
            return (boxes, rows) if len(rows) == len(runs) else None

        boxes, rows = page.wait(name, f"{len(runs)} rows named 01 ... in the Trial ID column",
                                table)
        assert [r["t"][:2] for r in rows] == [f"{k:02d}" for k in range(1, len(runs) + 1)]
        header = next(b for b in boxes if b["t"] == "Trial ID")
        mid = header["y"] + header["h"] / 2  # the header row's text, a name wrapped or not
        heads = "".join(b["t"] for b in sorted(boxes, key=lambda b: (b["x"], b["y"]))
                        if b["y"] <= mid + 12 and b["y"] + b["h"] >= mid - 12)
        for key in ("model.head_activation", "loss.from_logits", "decoder.name"):
            assert key in heads, f"{key} is not a column shown: {heads} (see {name}.png)"
        for rank, (run, row) in enumerate(zip(ranked, rows, strict=True), 1):
            mid = row["y"] + row["h"] / 2
            cells = {b["t"] for b in boxes if b["y"] <= mid <= b["y"] + b["h"]}
            assert to_precision(mious[run]) in cells, (rank, run.name, cells)
            if run.name == "yellow":  # its head, as its config.json has it
                head = json.loads((run / "config.json").read_text())["model"]["head_activation"]
                assert head in cells, f"the yellow run's head {head} is not shown: {cells}"
        page.screenshot(name)
        # the second URL: validation mIoU by epoch, one line per run, no training runs listed
        curves = re.search(r"by epoch: (\S+)", (out.parent / "board.log").read_text()).group(1)
        page.open(curves)
        def validation_only():  # the filters' matches are highlighted: texts come in parts
            text = re.sub(r"\s+", "", "".join(b["t"] for b in page.boxes()))
            return ("IoU/mean" in text and text.count("/validation") >= len(runs)
                    and all(f"{k:02d}" in text for k in range(1, len(runs) + 1))
                    and "/train" not in text)

        page.wait("board_curves", "the IoU/mean card and the validation runs only",
                  validation_only)
        page.screenshot("board_curves")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
