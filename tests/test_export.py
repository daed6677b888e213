"""History exports as HTTP downloads (rtdash.export), against a Panel server in this process: the rows are streamed
chunk by chunk as the store yields them, a row limit refuses large selections, one export per session runs at a
time, a ticket is the only input and is refused when unknown, expired or used.  The browser's side is in
``tests/ui/test_history_export.py``."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from urllib.parse import urljoin

import pandas as pd
import pytest
import requests
from panel.io.state import set_curdoc

from rtdash import export as exports
from rtdash.server import routes
from rtdash.stream import Runtime
from rtdash.views.history import DownloadLink, HistoryView
from tests.helpers import PanelServer, wait_until
from tests.store.test_store import prices, same_rows

ROWS = 20_000
CHUNK = 500


@pytest.fixture
def runtime(tmp_path, make_settings):
    """A runtime on a DuckDB store holding ``ROWS`` prices of BTC in the last hours (pollers not started)."""
    runtime = Runtime(make_settings(RTDASH_STORE=str(tmp_path / "history.duckdb"), RTDASH_ASSETS="BTC"))
    start = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta("6h")
    runtime.store.write("price", prices(ROWS, assets=("BTC",), start=start))
    yield runtime
    runtime.stop()


class Served:
    """A Panel server in this process whose sessions each show a History view, serving rtdash's routes; the views
    made, and the downloads their pages were asked to start."""

    def __init__(self, runtime, settings=None) -> None:
        self.views: list[HistoryView] = []
        self.downloads: list[tuple[str, str]] = []

        def app():
            view = HistoryView(runtime=runtime, settings=settings, span="All")  # shown: its widgets made
            self.views.append(view)
            return view

        self.server = PanelServer(app, extra_patterns=routes())
        self.url = self.server.url

    def session(self) -> HistoryView:
        self.server.new_session()
        return self.views[-1]

    def click(self, view: HistoryView, fmt: str = "csv") -> None:
        """Export clicked in ``view``'s page (in its document, on the server's loop)."""

        def click() -> None:
            with set_curdoc(view._doc):
                view._export_clicked(fmt)

        self.server.on_loop(click)

    def note(self, view: HistoryView) -> str:
        return self.server.on_loop(lambda: view._export_note.object if view._export_note.visible else "")

    def clicked_download(self, view: HistoryView, fmt: str = "csv") -> tuple[str, str]:
        """Click Export, and the (URL, file name) the page is asked to download, the URL resolved as the page at
        ``/`` resolves it (the view gives one relative to the page)."""
        before = len(self.downloads)
        self.click(view, fmt)
        wait_until(
            lambda: len(self.downloads) > before, 60, 0.05, f"the page to be asked to download ({self.note(view)})"
        )
        url, name = self.downloads[-1]
        return urljoin(self.url + "/", url), name


@pytest.fixture
def served(runtime, monkeypatch) -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def start(settings=None) -> Served:
        made.append(Served(runtime, settings))
        monkeypatch.setattr(DownloadLink, "download", lambda link, url, name: made[-1].downloads.append((url, name)))
        return made[-1]

    yield start
    for served in made:
        served.server.stop()


class Gate:
    """Wraps a store's ``export`` so that it yields its first chunk, then waits until ``open()``: the test sees what
    a client gets while the store has not been read to the end."""

    def __init__(self, store) -> None:
        self._export = store.export
        self.opened = threading.Event()
        self.chunks = 0

    def __call__(self, *args, **kwargs) -> Iterator[pd.DataFrame]:
        for chunk in self._export(*args, **kwargs):
            if self.chunks == 1:
                assert self.opened.wait(120), "the test never opened the gate"
            self.chunks += 1
            yield chunk

    def open(self) -> None:
        self.opened.set()


def read_csv(data: bytes) -> pd.DataFrame:
    df = pd.read_csv(io.BytesIO(data))
    return df.assign(time=pd.to_datetime(df["time"], utc=True))


def assert_short_refusal(response: requests.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"].startswith("text/plain")
    assert len(response.text) < 200 and "Traceback" not in response.text and "/rtdash" not in response.text
    assert "Content-Disposition" not in response.headers


def test_a_download_streams_chunk_by_chunk_and_one_export_per_session_runs_at_a_time(runtime, served, monkeypatch):
    monkeypatch.setattr(exports, "CHUNK_ROWS", CHUNK)
    gate = Gate(runtime.store)
    monkeypatch.setattr(runtime.store, "export", gate)
    writes: list[int] = []
    write = exports.ExportHandler.write
    monkeypatch.setattr(
        exports.ExportHandler, "write", lambda self, chunk: writes.append(len(chunk)) or write(self, chunk)
    )
    app = served()
    view = app.session()
    url, name = app.clicked_download(view)
    assert name.startswith("rtdash-price-") and name.endswith(".csv")

    with requests.get(url, stream=True, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/csv")
        assert response.headers["Content-Disposition"] == f'attachment; filename="{name}"'
        chunks = response.iter_content(chunk_size=None)
        first = next(chunks)  # the first chunk is there while the store has yielded one chunk only
        assert first.startswith(b"time,asset,quote,price,source\n") and gate.chunks == 1
        wait_until(lambda: f"of {ROWS:,} rows)" in app.note(view), 60, 0.05, "the progress in the page")
        assert "Exporting… 2 % (500 of 20,000 rows)" in app.note(view)
        assert app.server.on_loop(lambda: view._progress.visible and view._csv.disabled and view._parquet.disabled)

        # The same session asks again: the page refuses while its export runs, and so does the server.
        app.click(view, "parquet")
        wait_until(lambda: "An export of this page is running" in app.note(view), 30, 0.05, "a refusal in the page")
        second = exports.issue(**{**plan(view, "parquet"), "owner": view, "store": runtime.store})
        refused = requests.get(app.url + "/export/" + second.token, timeout=30)
        assert_short_refusal(refused, 429)
        assert "already running" in refused.text
        wait_until(lambda: "A second export of this page was refused" in app.note(view), 30, 0.05, "429 in the page")

        gate.open()
        data = first + b"".join(chunks)
    got = read_csv(data)
    assert len(got) == ROWS
    same_rows(got, runtime.store.read("price", series=["BTC"]), "price")
    # Written as read: one store chunk per write (and the header with the first), none near the whole file.
    assert len(writes) >= ROWS // CHUNK and max(writes) < len(data) / 20, (len(writes), max(writes), len(data))
    wait_until(lambda: f"Exported {ROWS:,} rows to {name}." in app.note(view), 30, 0.05, "the end in the page")
    assert app.server.on_loop(lambda: not view._progress.visible and not view._csv.disabled)
    assert view not in exports._streaming

    # The slot is free again: the same session exports Parquet.
    url, name = app.clicked_download(view, "parquet")
    response = requests.get(url, timeout=60)
    assert response.status_code == 200 and name.endswith(".parquet")
    same_rows(pd.read_parquet(io.BytesIO(response.content)), runtime.store.read("price", series=["BTC"]), "price")


def plan(view: HistoryView, fmt: str) -> dict:
    fields, why = view._export_plan(fmt)
    assert fields is not None, why
    return fields


def test_the_row_limit_refuses_with_a_message_and_a_raised_setting_lets_it_through(runtime, served, make_settings):
    limited = make_settings(RTDASH_ASSETS="BTC", RTDASH_EXPORT_MAX_ROWS="19999")
    app = served(settings=limited)
    view = app.session()
    app.click(view)
    wait_until(lambda: "export limit" in app.note(view), 60, 0.05, "the limit's message")
    assert app.note(view).count("20,000 rows") == 1 and "19,999 rows" in app.note(view)
    assert "RTDASH_EXPORT_MAX_ROWS" in app.note(view)
    assert not app.downloads
    assert app.server.on_loop(lambda: not view._csv.disabled)  # the buttons are back

    raised = served(settings=make_settings(RTDASH_ASSETS="BTC", RTDASH_EXPORT_MAX_ROWS="20000"))
    view = raised.session()
    url, _ = raised.clicked_download(view)
    response = requests.get(url, timeout=60)
    assert response.status_code == 200
    assert len(read_csv(response.content)) == ROWS


def test_only_a_valid_ticket_downloads_once(runtime, served, monkeypatch):
    app = served()
    view = app.session()
    for path in ("/export/", "/export/nonsense", "/export/" + "A" * 43, "/export/%00%2e%2e", "/export/..%2F..%2Fetc"):
        assert_short_refusal(requests.get(app.url + path, timeout=30), 404)
    url, _ = app.clicked_download(view)
    assert requests.get(url, timeout=60).status_code == 200
    assert_short_refusal(requests.get(url, timeout=30), 404)  # used

    monkeypatch.setattr(exports, "TICKET_TTL", 0.0)
    url, _ = app.clicked_download(view)
    assert_short_refusal(requests.get(url, timeout=30), 404)  # expired
    app.server.on_loop(lambda: view._export_unused(url.rsplit("/", 1)[1]))
    wait_until(lambda: "The download did not start" in app.note(view), 30, 0.05, "the expiry in the page")
    assert app.server.on_loop(lambda: not view._csv.disabled)


def test_a_cancelled_download_ends_the_export_and_frees_the_slot(runtime, served, monkeypatch):
    monkeypatch.setattr(exports, "CHUNK_ROWS", CHUNK)
    gate = Gate(runtime.store)
    monkeypatch.setattr(runtime.store, "export", gate)
    app = served()
    view = app.session()
    url, _ = app.clicked_download(view)
    response = requests.get(url, stream=True, timeout=60)
    assert next(response.iter_content(chunk_size=None))
    response.close()  # the browser's download cancelled
    gate.open()
    wait_until(lambda: "the download was cancelled" in app.note(view), 60, 0.05, "the cancellation in the page")
    # The slot is freed once the store's cursor is closed, on a thread, just after the page is told.
    wait_until(lambda: view not in exports._streaming, 30, 0.05, "the export's slot freed")
    assert gate.chunks < ROWS // CHUNK
    assert app.server.on_loop(lambda: not view._csv.disabled)


def test_tickets_end_with_their_session(runtime, served):
    app = served()
    view = app.session()
    url, _ = app.clicked_download(view)
    app.server.on_loop(lambda: view._session_ended(None))
    assert_short_refusal(requests.get(url, timeout=30), 404)


def test_export_max_rows_is_a_bounded_setting(make_settings):
    from rtdash.config import SettingsError

    assert make_settings().export_max_rows == 1_000_000
    assert make_settings(RTDASH_EXPORT_MAX_ROWS="5000000").export_max_rows == 5_000_000
    for bad in ("0", "-1", "1e99", "99999999999999999999", "lots"):
        with pytest.raises(SettingsError, match="RTDASH_EXPORT_MAX_ROWS"):
            make_settings(RTDASH_EXPORT_MAX_ROWS=bad)


def test_a_store_failing_mid_export_fails_the_download_rather_than_truncating_it(runtime, served, monkeypatch):
    monkeypatch.setattr(exports, "CHUNK_ROWS", CHUNK)
    export = runtime.store.export

    def failing(*args, **kwargs) -> Iterator[pd.DataFrame]:
        chunks = export(*args, **kwargs)
        yield next(chunks)
        raise RuntimeError("connection to /var/lib/secret lost")

    monkeypatch.setattr(runtime.store, "export", failing)
    app = served()
    view = app.session()
    url, _ = app.clicked_download(view)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # no end of the body: the browser sees a failure
        requests.get(url, timeout=60)
    wait_until(lambda: "The export failed after 500 rows" in app.note(view), 30, 0.05, "the failure in the page")
    assert "/var/lib" not in app.note(view)
    assert view not in exports._streaming
