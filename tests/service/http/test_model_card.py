"""The model card: JSON by default, an HTML page for a browser, the pictures training drew; the
page in a real headless browser (Debian's chromium), with a screenshot kept as an artifact."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from flaskapp import create_app
from lib.core.artifacts import MANIFEST_FILE
from tests.lib.core.test_artifacts import reseal
from tests.support.browser import Browser, chromium_path

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def store_client(two_versions):
    return create_app({"model_store": two_versions.store.root, "model_dir": None, "access_log": False}).test_client()


class Page(HTMLParser):
    """The parts of a card page the tests look at: the text of each table's cells, by table id, and
    the images' sources."""

    def __init__(self, html: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.text: list[str] = []
        self._table = self._row = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._row.append("")
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._row:
            self._row[-1] += data.strip()


@pytest.mark.parametrize(("accept", "kind"), [
    (None, "application/json"), ("*/*", "application/json"), ("application/json", "application/json"),
    ("text/html", "text/html"), (BROWSER_ACCEPT, "text/html"),
])
def test_json_is_the_default_and_a_browser_gets_the_page(store_client, accept, kind):
    headers = {"Accept": accept} if accept else {}
    for path in ("/model", f"/models/{store_client.application.extensions['model_switch'].current.version}"):
        reply = store_client.get(path, headers=headers)
        assert reply.status_code == 200 and reply.mimetype == kind, path
        assert "Accept" in reply.headers["Vary"]


def test_the_page_shows_the_version_data_metrics_variables_and_pictures(store_client, two_versions):
    manifest = json.loads((two_versions.store.directory(two_versions.a) / MANIFEST_FILE).read_text())
    reply = store_client.get("/model", headers={"Accept": BROWSER_ACCEPT})
    assert reply.headers["Content-Security-Policy"] == "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"
    page = Page(reply.get_data(as_text=True))
    assert two_versions.a in "".join(page.text)
    assert ["data fingerprint (sha256)", manifest["training_data"]["sha256"]] in page.tables["training"]
    assert page.tables["metrics"][1:] == [
        [split, f"{auc:.4f}", str(manifest["metrics"]["split_rows"][split])]
        for split, auc in manifest["metrics"]["auc"].items()]
    variables = page.tables["variables"]
    assert variables[0] == ["variable", "coefficient", "standard error", "z"]
    assert variables[1:] == [[v["name"], f"{v['coefficient']:.6f}", f"{v['std_error']:.6f}",
                              f"{v['coefficient'] / v['std_error']:.2f}"] for v in manifest["variables"]]
    assert len(variables) == 26
    assert page.images == [f"/models/{two_versions.a}/roc.png", f"/models/{two_versions.a}/calibration.png"]
    for source in page.images:
        picture = store_client.get(source)
        assert picture.status_code == 200 and picture.mimetype == "image/png"
        assert picture.data == (two_versions.store.directory(two_versions.a) / source.rsplit("/", 1)[1]).read_bytes()
        assert picture.data.startswith(PNG_SIGNATURE)


def test_any_version_can_be_checked_before_a_switch(store_client, two_versions):
    card = store_client.get(f"/models/{two_versions.b}").get_json()
    assert (card["model_version"], card["active"], card["serving"], card["threshold"]) == (
        two_versions.b, False, False, 0.6)
    assert "golden" not in card
    page = Page(store_client.get(f"/models/{two_versions.b}", headers={"Accept": "text/html"}).get_data(as_text=True))
    assert "Not served by the worker that answered this page" in "".join(page.text)
    assert page.images[0] == f"/models/{two_versions.b}/roc.png"


def test_manifest_text_is_escaped_in_the_page(store_client, two_versions):
    directory = two_versions.store.directory(two_versions.b)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["training_data"]["file"] = "<script>alert(1)</script>.csv"
    reseal(directory, manifest)
    html = store_client.get(f"/models/{two_versions.b}", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;.csv" in html


@pytest.mark.parametrize(("path", "message"), [
    ("/models/2020-01-01-000000000000", "no version 2020-01-01-000000000000 in the model store"),
    ("/models/latest", "'latest' is not a version name"),
    ("/models/{a}/model.pkl", "no picture 'model.pkl'; pictures: roc.png, calibration.png"),
    ("/models/2020-01-01-000000000000/roc.png", "no version 2020-01-01-000000000000 in the model store"),
])
def test_unknown_versions_and_files_are_404_naming_them(store_client, two_versions, path, message):
    reply = store_client.get(path.format(a=two_versions.a))
    assert reply.status_code == 404 and reply.get_json()["error"] == "not_found"
    assert reply.get_json()["message"].startswith(message)
    assert str(two_versions.store.root) not in reply.get_json()["message"]


@pytest.mark.server
@pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_the_card_renders_in_a_real_browser(server, stages, tmp_path):
    with Browser(tmp_path / "profile") as browser:
        browser.open(server.url + "/model")
        assert browser.evaluate("document.title") == f"Model {stages.version}"
        rows = browser.evaluate("Array.from(document.querySelectorAll('#variables tbody tr'))"
                                ".map(tr => Array.from(tr.cells).map(td => td.textContent.trim()))")
        assert [row[0] for row in rows] == stages.variables
        assert [float(row[1]) for row in rows] == [round(v["coefficient"], 6) for v in stages.manifest["variables"]]
        assert [float(row[2]) for row in rows] == [round(v["std_error"], 6) for v in stages.manifest["variables"]]
        fingerprint = browser.evaluate("document.getElementById('fingerprint').textContent")
        assert fingerprint == stages.manifest["training_data"]["sha256"]
        # Each picture loaded and decoded: a broken image has a natural width of 0.
        images = browser.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
                                  "i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width])")
        assert [src for src, *_ in images] == [f"/models/{stages.version}/roc.png",
                                               f"/models/{stages.version}/calibration.png"]
        assert all(complete and width > 100 and height > 100 and shown > 100
                   for _, complete, width, height, shown in images), images
        screenshot = browser.screenshot(tmp_path / "model-card.png")
    assert screenshot.startswith(PNG_SIGNATURE) and len(screenshot) > 50_000
    print(f"\n[browser] model card screenshot: {tmp_path / 'model-card.png'}")
