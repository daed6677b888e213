"""Bokeh's checks of a document's models (``bokeh.core.validation``): a served page does not run them (rtdash.server,
``skip_document_validation``: they took a fifth of the page request), so they run here, over every tab's models."""

from __future__ import annotations

import collections

import panel as pn
import pytest
from bokeh.core.validation import check_integrity
from bokeh.document import Document
from bokeh.io.doc import patch_curdoc
from bokeh.settings import settings as bokeh_settings

from rtdash.app import create_app
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
