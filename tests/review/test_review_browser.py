"""End-to-end tests of the review app in a real browser: headless Chromium (Debian's
package) driven by Playwright, against the app served by uvicorn on a free port in a
thread. A case page shows the ECG and playing cines with generation progress (from a
stand-in generator, and from a real, tiny, untrained anatomy-first pipeline); an
upload becomes a case; a reader's answers autosave and survive a reload, a browser
crash and a server restart; two readers answering at once lose nothing.

The tests save screenshots of the pages to a temporary folder, or to
``$CARDIACNETS_SCREENSHOTS`` (``CARDIACNETS_SCREENSHOTS=docs/screenshots`` refreshes
the README's; a plain test run never rewrites tracked files). They fail, never skip, when Chromium is missing:
``make test`` installs it (``apt-get install -y chromium``).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from cardiacnets.review.app import ReviewSettings, create_app
from cardiacnets.review.jobs import ReviewModels

from support.review import fake_predict, FakeCinePipeline, serve

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("CARDIACNETS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(os.environ.get("CARDIACNETS_SCREENSHOTS",
                                   Path(tempfile.gettempdir()) / "cardiacnets-screenshots"))
TOKEN = "review-token-0001"
READER_TOKEN = "reader-token-0001"
ADMIN_TOKEN = "admin-token-00001"
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's package (apt-get install -y chromium; "
                    "'make test' does it) or point CARDIACNETS_CHROMIUM at a Chromium binary")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _study(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "demo", "title": "ECG reader study", "seed": 0, "reader_token": READER_TOKEN,
        "admin_token": ADMIN_TOKEN, "instructions": "Choose the most likely diagnosis for each reading.",
        "arms": ["ecg_only", "ecg_generated_cmr", "ecg_real_cmr"], "cases": {"ids": ["1000002", "1000007", "1000001"]},
        "questions": {"diagnosis": {"choices": {"normal": None, "cardiomyopathy": "label_cardiomyopathy",
                                                "coronary_artery_disease": "label_coronary_artery_disease"}}},
    }, sort_keys=False))
    return path


def _app(data: Path, app_dir: Path, study: Path, step_delay_s: float = 0.08):
    models = ReviewModels(generators={"sa": FakeCinePipeline(step_delay_s=step_delay_s)}, predictor=fake_predict,
                          key="fake")
    return create_app(ReviewSettings(data_dir=data, app_dir=app_dir, token=TOKEN, studies=[study]), models)


@pytest.fixture(scope="module")
def server(review_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("review_browser")
    app = _app(review_dataset, root / "app", _study(root / "study.yaml"))
    with serve(app) as base:
        yield base, app


def _login(page, base: str) -> None:
    page.goto(f"{base}/cases")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/cases")


def _frames_advance(figure) -> bool:
    first = figure.get_attribute("data-frame")
    for _ in range(40):
        time.sleep(0.05)
        if figure.get_attribute("data-frame") != first:
            return True
    return False


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def test_case_page_ecg_cines_progress_and_predictions(browser, server):
    from playwright.sync_api import expect

    base, _ = server
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    _login(page, base)
    expect(page.locator("#case-table tbody tr")).to_have_count(8)
    page.select_option("select[name=label]", "label_cardiomyopathy")
    page.click("#case-filters button[type=submit]")
    expect(page.locator("#case-table tbody tr")).to_have_count(3)
    _shot(page, "cases.png")
    page.click("text=1000004")  # not a study case: nothing generated it in advance
    page.wait_for_url(f"{base}/cases/1000004")
    # Generation is under way, with a progress bar, then the SYNTHETIC cine plays.
    expect(page.locator(".cine-job progress")).to_be_visible()
    generated = page.locator("figure.cine.synthetic")
    expect(generated).to_have_class(re.compile("loaded"), timeout=30_000)
    expect(generated.locator(".synthetic-badge")).to_have_text("SYNTHETIC")
    expect(generated.locator("figcaption")).to_contain_text("SYNTHETIC")
    assert _frames_advance(generated)
    real = page.locator("figure.cine:not(.synthetic)").first
    expect(real).to_have_class(re.compile("loaded"))
    assert _frames_advance(real)
    assert page.locator("#ecg-image").evaluate("img => img.complete && img.naturalWidth") > 500
    expect(page.locator(".predictions table.indices")).to_contain_text("LV ejection fraction")
    expect(page.locator(".predictions table.indices tr.low")).to_contain_text("38.5 %")
    # Pausing stops the player on a frame.
    generated.locator(".cine-toggle").click()
    paused = generated.get_attribute("data-frame")
    time.sleep(0.3)
    assert generated.get_attribute("data-frame") == paused
    generated.locator(".cine-toggle").click()
    page.check("input[name=reviewed]")
    page.click("#review-panel button[type=submit]")
    page.wait_for_url(f"{base}/cases/1000004")
    expect(page.locator("input[name=reviewed]")).to_be_checked()
    _shot(page, "case_page.png")
    assert not errors
    context.close()


class PacedPipeline:
    """A real pipeline that pauses after each denoising step before reporting it, so that the page's polling
    (every 0.5 s) sees the steps go by; the generation itself is the pipeline's own."""

    def __init__(self, pipe, pause_s: float):
        self.pipe, self.pause_s = pipe, pause_s

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        report = kwargs["callback_on_step_end"]

        def paced(pipe, step, timestep, callback_kwargs):
            time.sleep(self.pause_s)
            return report(pipe, step, timestep, callback_kwargs)

        return self.pipe(**{**kwargs, "callback_on_step_end": paced})


STEP_SHOWN = """(pattern) => {
  const box = document.querySelector(".cine-job");
  if (!box) return false;
  const bar = box.querySelector("progress.job-progress");
  const match = box.querySelector(".job-message").textContent.match(new RegExp(pattern));
  return match && bar.value > 0 && bar.value < 1 ? match[0] : false;
}"""


def test_case_page_generates_with_a_real_anatomy_first_pipeline(browser, review_dataset, tmp_path):
    """An untrained anatomy-first pipeline of tiny models (read-out of the case's ECG and demographics, anatomy
    prior, shape decoding, label-conditioned image denoiser, autoencoder) behind the case page: the page reports
    the steps of both stages as they run, then plays the generated cine."""
    from playwright.sync_api import expect

    from cardiacnets.generation.zoo import untrained_anatomy_pipeline

    pipe = untrained_anatomy_pipeline(image_size=32, n_components=8,
                                      vae_overrides={"block_out_channels": [8, 8, 8], "norm_num_groups": 4})
    settings = ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app", token=TOKEN)
    settings.generation.num_inference_steps = 6  # 12 steps: 6 of the anatomy, then 6 of the image
    models = ReviewModels(generators={"sa": PacedPipeline(pipe, pause_s=0.3)}, predictor=fake_predict,
                          key="untrained-anatomy")
    with serve(create_app(settings, models)) as base:
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        _login(page, base)
        page.goto(f"{base}/cases/1000004")
        # Step progress: the anatomy's steps, then the image's, each with the bar part-way.
        first = page.wait_for_function(STEP_SHOWN, arg=r"anatomy denoising step \d+ of 12", timeout=60_000)
        later = page.wait_for_function(STEP_SHOWN, arg=r"image denoising step \d+ of 12", timeout=60_000)
        assert first.json_value().startswith("anatomy") and later.json_value().startswith("image")
        generated = page.locator("figure.cine.synthetic")
        expect(generated).to_have_class(re.compile("loaded"), timeout=60_000)
        expect(generated.locator(".synthetic-badge")).to_have_text("SYNTHETIC")
        expect(generated.locator(".cine-label")).to_contain_text("/25")  # the pipeline's 25 frames
        assert generated.locator("canvas").evaluate("c => [c.width, c.height]") == [96, 96]  # 32 x 32, shown x 3
        assert _frames_advance(generated)
        assert not errors
        context.close()


def test_upload_becomes_a_case_with_generation_progress(browser, server, ukb_xml_path):
    from playwright.sync_api import expect

    base, _ = server
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    _login(page, base)
    page.goto(f"{base}/upload")
    page.set_input_files("input[name=ecg]", str(ukb_xml_path))
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/uploads/[0-9a-f]{24}$"))
    expect(page.locator("h1")).to_contain_text("ukbb_scrubbed.xml")
    assert page.locator("#ecg-image").evaluate("img => img.complete && img.naturalWidth") > 500
    expect(page.locator("figure.cine.synthetic")).to_have_class(re.compile("loaded"), timeout=30_000)
    expect(page.locator(".predictions")).to_contain_text("LV end-diastolic volume")
    context.close()


def _sign_in(page, base: str, name: str) -> None:
    page.goto(f"{base}/study/demo/")
    page.fill("input[name=name]", name)
    page.fill("input[name=token]", READER_TOKEN)
    page.click("#study-signin button[type=submit]")
    page.wait_for_url(re.compile(r".*/study/demo/readings/\d+$"), timeout=30_000)  # after any preparation


def _answer(page, diagnosis: str, text: str | None = None) -> None:
    page.check(f"input[name=diagnosis][value={diagnosis}]")
    page.check("input[name=confidence][value='4']")
    if page.locator("input[name=realism]").count():
        page.check("input[name=realism][value='3']")
    if text is not None:
        page.fill("textarea[name=free_text]", text)


def test_reading_autosaves_and_survives_reload_crash_and_restart(browser, review_dataset, tmp_path):
    from playwright.sync_api import expect

    app_dir, study = tmp_path / "app", _study(tmp_path / "study.yaml")
    app = _app(review_dataset, app_dir, study, step_delay_s=0.0)
    with serve(app) as base:
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        _sign_in(page, base, "Dr Reader")
        assert page.url.endswith("/readings/1")
        expect(page.locator("h1")).to_have_text("Reading 1 of 9")
        if page.locator("figure.cine").count():
            expect(page.locator("figure.cine")).to_have_class(re.compile("loaded"))
        _answer(page, "normal", "sinus rhythm")
        expect(page.locator("#save-state")).to_have_text("saved")
        page.reload()
        expect(page.locator("input[name=diagnosis][value=normal]")).to_be_checked()
        expect(page.locator("input[name=confidence][value='4']")).to_be_checked()
        expect(page.locator("textarea[name=free_text]")).to_have_value("sinus rhythm")
        _shot(page, "reader_study.png")
        page.click("#submit-reading")
        page.wait_for_url(f"{base}/study/demo/readings/2")
        page.goto(f"{base}/study/demo/readings/1")  # a submitted reading: shown, locked
        expect(page.locator("input[name=diagnosis][value=normal]")).to_be_checked()
        expect(page.locator("input[name=diagnosis][value=normal]")).to_be_disabled()
        page.goto(f"{base}/study/demo/readings/2")
        _answer(page, "cardiomyopathy")
        expect(page.locator("#save-state")).to_have_text("saved")
        context.close()  # the browser "crashes" before reading 2 is submitted
    store = app.state.review.studies["demo"].store
    reading = store.reading("Dr Reader", 1)
    assert (reading.diagnosis, reading.confidence, reading.submitted) == ("cardiomyopathy", 4, False)
    assert store.reading("Dr Reader", 0).active_ms > 0  # reading time reached the server
    # A restarted server on the same folder, a new browser session: the reader resumes at reading 2.
    with serve(_app(review_dataset, app_dir, study)) as base:
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        _sign_in(page, base, "Dr Reader")
        assert page.url.endswith("/readings/2")
        expect(page.locator("input[name=diagnosis][value=cardiomyopathy]")).to_be_checked()
        expect(page.locator("input[name=confidence][value='4']")).to_be_checked()
        context.close()


def test_two_readers_answering_at_once_lose_nothing(browser, server):
    from playwright.sync_api import expect

    base, app = server
    store = app.state.review.studies["demo"].store
    pages = []
    for name in ("reader A", "reader B"):
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        _sign_in(page, base, name)
        pages.append((name, page))
    truth = {c.case_id: c.truth[0] for c in store.cases()}
    for number in range(1, 4):
        # Interleave the clicks: both readers' autosaves are in flight together.
        for step in ("diagnosis", "confidence", "realism", "free_text"):
            for name, page in pages:
                reading = store.reading(name, number - 1)
                if step == "diagnosis":
                    page.check(f"input[name=diagnosis][value={truth[reading.case_id]}]")
                elif step == "confidence":
                    page.check("input[name=confidence][value='5']")
                elif step == "realism" and reading.shows_image:
                    page.check("input[name=realism][value='2']")
                elif step == "free_text":
                    page.fill("textarea[name=free_text]", f"{name} {number}")
        for name, page in pages:
            expect(page.locator("#save-state")).to_have_text("saved")
        for name, page in pages:
            page.click("#submit-reading")
        for name, page in pages:
            page.wait_for_url(f"{base}/study/demo/readings/{number + 1}")
    for name, _ in pages:
        readings = store.readings(name)[:3]
        assert all(r.submitted and r.confidence == 5 and r.free_text == f"{name} {r.position + 1}" for r in readings)
        assert all(r.diagnosis == truth[r.case_id] for r in readings)
        assert all(r.realism == (2 if r.shows_image else None) for r in readings)
    # The study's administrator sees both readers in the summary.
    name, page = pages[0]
    page.goto(f"{base}/study/demo/admin")
    page.fill("input[name=token]", ADMIN_TOKEN)
    page.click("button[type=submit]")
    expect(page.locator("#per-reader")).to_contain_text("reader B")
    expect(page.locator("#per-arm")).to_contain_text("ECG + generated CMR")
    _shot(page, "study_summary.png")
    for _, page in pages:
        page.context.close()


def test_a_cross_site_form_changes_nothing(browser, server):
    # A page on another site that auto-submits a form to the app (with a guessed CSRF token), while
    # the reviewer is signed in: the app refuses it, and the note is not stored.
    from cardiacnets.review.app import subject_key

    base, app = server
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    _login(page, base)
    key = subject_key("1000006")
    hostile = (f'<form id="f" method="post" action="{base}/cases/{key}/review"><input name="reviewed" value="yes">'
               '<input name="note" value="pwned"><input name="csrf_token" value="guess"></form>'
               '<script>document.getElementById("f").submit()</script>')
    context.route("http://evil.example/**",
                  lambda route: route.fulfill(status=200, content_type="text/html", body=hostile))
    with page.expect_response(lambda response: response.url.endswith(f"/cases/{key}/review")) as posted:
        page.goto("http://evil.example/")
    assert posted.value.status == 403 and "cross-site request refused" in posted.value.text()
    assert key not in app.state.review.reviews()
    context.close()
