"""Bokeh's checks of a document's models (``bokeh.core.validation``): a served page does not run them (rtdash.server,
``skip_document_validation``: they took a fifth of the page request), so they run here, over every tab's models.
And the messages that carry a change of those models to a page (``PATCH-DOC``): as Bokeh makes them, at the cost of
what they carry (rtdash.server, ``_SyncedModels``), and a status badge's update, made once per fetch and session."""

from __future__ import annotations

import collections
import difflib

import panel as pn
import pytest
from bokeh.core.serialization import Serializer
from bokeh.core.validation import check_integrity
from bokeh.document import Document
from bokeh.io.doc import patch_curdoc
from bokeh.model import Model
from bokeh.models import ColumnDataSource, Div, Row
from bokeh.protocol import Protocol
from bokeh.settings import settings as bokeh_settings

import rtdash.server  # noqa: F401  (sets up the PATCH-DOC messages, as serving does)
from rtdash.app import create_app
from rtdash.views.status import StatusBadge
from tests.helpers import PanelServer
from tests.views.test_refresh import plain


def test_every_tab_of_the_dashboard_passes_bokehs_model_checks(make_settings, tmp_path) -> None:
    settings = make_settings(
        RTDASH_PRICE_INTERVAL="1h", RTDASH_WEATHER_INTERVAL="1h", RTDASH_STORE=str(tmp_path / "history.duckdb")
    )

    def build() -> dict[int, list]:
        doc = Document()
        with patch_curdoc(doc):
            app = create_app(settings)
            doc.add_root(app.get_root(doc))
            (tabs,) = app.select(pn.Tabs)
            shown = {}
            for index in (0, 1, 2):  # a dynamic tab's models are in the document while it is shown
                tabs.active = index
                shown[index] = list(doc.models)
        return shown

    shown = plain(build)
    kinds = {index: collections.Counter(type(model).__name__ for model in models) for index, models in shown.items()}
    assert kinds[0]["figure"] == 4, kinds[0]  # Live: the price chart and the three weather charts
    assert kinds[1]["DataTabulator"] == 1 and kinds[1]["TileRenderer"] == 1, kinds[1]  # Refresh: the table, the map
    assert kinds[2]["figure"] == 1, kinds[2]  # History: its chart
    for index, models in shown.items():
        issues = check_integrity(models)
        assert issues.error == [] and issues.warning == [], (index, issues)


@pytest.mark.parametrize(("variable", "checked"), [(None, False), ("true", True), ("false", False)])
def test_a_served_page_skips_the_checks_unless_bokeh_validate_doc_says(variable, checked, make_settings, monkeypatch):
    """Bokeh's own setting keeps its say: ``BOKEH_VALIDATE_DOC=true`` checks every served document again."""
    if variable is None:
        monkeypatch.delenv("BOKEH_VALIDATE_DOC", raising=False)
    else:
        monkeypatch.setenv("BOKEH_VALIDATE_DOC", variable)
    settings = make_settings(RTDASH_PRICE_INTERVAL="1h", RTDASH_WEATHER_INTERVAL="1h")
    bokeh_settings.perform_document_validation.unset_value()  # as a new process has it (another test served here)
    server = PanelServer(lambda: create_app(settings))
    try:
        assert bokeh_settings.perform_document_validation() is (variable != "false")  # before any page
        server.new_session()
        assert bokeh_settings.perform_document_validation() is checked
    finally:
        server.stop()
        bokeh_settings.perform_document_validation.unset_value()


def _document(models: int) -> tuple[Document, ColumnDataSource, Row]:
    """A document the page already has (its models synced): a row of ``models`` texts and a data source."""
    doc = Document()
    source = ColumnDataSource({"time": [1.0, 2.0], "price": [10.0, 11.0]})
    row = Row(children=[Div(text=f"text {i}") for i in range(models)], tags=[source])
    doc.add_root(row)
    doc.models.flush_synced()
    return doc, source, row


def _events(doc: Document, change) -> list:
    events = []
    doc.on_change(lambda event: events.append(event))
    change()
    return events


def test_a_change_message_holds_what_bokeh_would_put_in_it() -> None:
    """New points and a new model: the message's events equal those of Bokeh's own serializer, given every model
    the page has, and the new model counts as sent afterwards, as with Bokeh's."""
    doc, source, row = _document(20)
    added = Div(text="new")

    def change() -> None:
        source.stream({"time": [3.0], "price": [12.0]}, rollover=10)
        row.children = [*row.children, added]

    events = _events(doc, change)
    expected = Serializer(references=doc.models.synced_references).encode(events)
    assert added in doc.models._new_models
    message = Protocol().create("PATCH-DOC", events)
    assert message.content["events"] == expected
    assert [event["kind"] for event in expected] == ["ColumnsStreamed", "ModelChanged"]
    assert sum(1 for ref in expected[1]["new"] if ref.get("type") == "object") == 1  # the new model, whole
    assert added not in doc.models._new_models  # sent: the next message refers to it by id


def test_a_change_message_costs_what_it_holds_not_what_the_document_holds(monkeypatch) -> None:
    """Bokeh's ``patch_doc.create`` made a reference for every model of the document for each message (a dashboard
    session has ~1,000): streaming one point made ~2,000 references in a document of 2,000 models."""
    doc, source, _ = _document(2000)
    events = _events(doc, lambda: source.stream({"time": [3.0], "price": [12.0]}, rollover=10))
    made = []
    ref = Model.ref
    monkeypatch.setattr(Model, "ref", property(lambda model: made.append(model) or ref.fget(model)))
    message = Protocol().create("PATCH-DOC", events)
    assert message.content["events"][0]["kind"] == "ColumnsStreamed"
    assert message.content["events"][0]["model"] == {"id": source.id}
    assert len(made) <= 2, len(made)


def test_a_badge_update_reaches_its_model_without_bokehs_spelling_hints(monkeypatch) -> None:
    """Panel looks a changed badge field up on the badge's outer model, where Bokeh answered with the closest
    property names (difflib): a third of an update's cost.  The field reaches the page's model as before."""
    doc = Document()
    badge = StatusBadge(kind="price", label="Prices", provider="Coinbase", last_success=1.0)
    root = badge.get_root(doc)
    doc.add_root(root)
    hints = []
    close_matches = difflib.get_close_matches
    monkeypatch.setattr(difflib, "get_close_matches", lambda *args, **kw: hints.append(args[0]) or close_matches(*args))
    badge.param.update(last_success=2.0, failures=1)
    assert (root.data.last_success, root.data.failures) == (2.0, 1)
    assert hints == []
    assert "last_success" not in root.properties_with_values(include_defaults=True)  # not a property of the model
