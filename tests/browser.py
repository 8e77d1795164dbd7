"""A real browser for the page tests: Debian's chromium driven by Playwright, against real ``aqa serve`` processes.

Playwright never downloads a browser here: it drives ``/usr/bin/chromium`` (Debian's package; ``.ci/run``
installs it). A pytest plugin (``tests/conftest.py`` loads it): fixtures and the ``--screenshots DIR`` option.
Every page runs offline, as at a venue without internet: any request to a host other than
this machine is refused and recorded, and the test fails if one was attempted.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from tests.service_processes import ServiceProcess, free_port, service_env, start_api

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SCORE_KEY, READ_KEY = "desk-score-key", "desk-read-key"
KEYS = f"{SCORE_KEY}:score,{READ_KEY}:read"
VIEWPORT = {"width": 1280, "height": 900}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--screenshots", type=Path, default=None,
                     help="folder for the browser tests' screenshots (default: a folder under pytest's tmp)")


@dataclass
class OfflinePage:
    page: Page
    blocked: list[str] = field(default_factory=list)  # requests that tried to leave this machine
    errors: list[str] = field(default_factory=list)   # uncaught JavaScript errors

    def enter_key(self, key: str) -> None:
        self.page.wait_for_selector("#key-panel:not([hidden])")
        self.page.fill("#key-input", key)
        self.page.click("#key-form button")


@dataclass
class Server:
    process: ServiceProcess
    url: str


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests save their screenshots (``--screenshots DIR``, else under pytest's tmp)."""
    folder = request.config.getoption("--screenshots") or tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def offline_page(browser: Browser) -> Iterator[OfflinePage]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    offline = OfflinePage(page)

    def only_this_machine(route: Route) -> None:
        if urlparse(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            offline.blocked.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_this_machine)
    page.on("pageerror", lambda error: offline.errors.append(str(error)))
    yield offline
    context.close()
    assert not offline.errors, f"JavaScript errors on the page: {offline.errors}"
    assert not offline.blocked, f"the page tried to reach other hosts: {offline.blocked}"


def start_server(log_dir: Path, **settings: object) -> Iterator[Server]:
    """``aqa serve`` (embedded mode) on a free port with the API keys of these tests."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = service_env(data_dir=log_dir / "data", port=free_port(), api_keys=KEYS, **settings)
    process, url = start_api(env, log_dir / "api.log")
    try:
        yield Server(process, url)
    finally:
        process.stop()


@pytest.fixture(scope="session")
def desk_model_dir(tpt_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TPT test model (temporal parts as evidence), asking for the alignment evidence too."""
    model_dir = tmp_path_factory.mktemp("desk-model") / "tpt"
    shutil.copytree(tpt_model_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["alignment_evidence"] = True
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
    return model_dir


@pytest.fixture(scope="session")
def archive_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the operator allows server-side archives in (AQA_ARCHIVE_ROOTS)."""
    return tmp_path_factory.mktemp("archives")


@pytest.fixture(scope="session")
def demo_server(archive_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`aqa serve` with the bundled demo model (no AQA_MODEL_DIR: what a user gets), API keys and an archive root.
    Each job waits 0.5 s before it is scored, so a batch of 10 runs long enough to be seen live."""
    yield from start_server(tmp_path_factory.mktemp("demo-server"), archive_roots=archive_root,
                            test_task_delay_seconds=0.5)


@pytest.fixture(scope="session")
def tpt_server(desk_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The TPT test model: its scores carry temporal parts and the alignment with the closest exemplar."""
    yield from start_server(tmp_path_factory.mktemp("tpt-server"), model_dir=desk_model_dir)


def drop_file(page: Page, selector: str, path: Path, mime: str = "video/mp4") -> None:
    """Drag a file from the desktop onto ``selector``: dragenter, dragover and drop with a DataTransfer."""
    transfer = page.evaluate_handle(
        """([name, data, mime]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            return transfer;
        }""", [path.name, base64.b64encode(path.read_bytes()).decode("ascii"), mime])
    for event in ("dragenter", "dragover", "drop"):
        page.dispatch_event(selector, event, {"dataTransfer": transfer})
