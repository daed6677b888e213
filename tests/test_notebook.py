"""The notebook runs top to bottom in a real Jupyter kernel, and `panel serve` serves it."""

from __future__ import annotations

import nbformat
import pytest
import requests
from nbclient import NotebookClient

from tests.helpers import ROOT, ServedApp, fake_env

NOTEBOOK = ROOT / "realtime_dashboard.ipynb"
WAIT_FOR_DELIVERY = """
import asyncio
asset = settings.assets[0]
view = LiveView(runtime=runtime)
points = len(view._prices[asset].data(asset))
for _ in range(300):
    if len(received) >= 2 and len(view._prices[asset].data(asset)) > points:
        break
    await asyncio.sleep(0.1)
print("waited: delivered" if len(received) >= 2 else f"waited: {len(received)} update(s)")
print(f"chart points: {points} -> {len(view._prices[asset].data(asset))}")
"""


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert [cell for cell in nb.cells if cell.cell_type == "code" and cell.outputs] == []


@pytest.mark.slow
def test_notebook_runs_in_a_kernel(fake_api, tmp_path, monkeypatch):
    for name, value in fake_env(fake_api.url, RTDASH_PRICE_INTERVAL="500ms", RTDASH_WEATHER_INTERVAL="2s").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # One more cell, for the test only: wait on the kernel's own loop until the live stream has delivered there.
    nb.cells.append(nbformat.v4.new_code_cell(WAIT_FOR_DELIVERY))
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "update(s) delivered to this kernel so far" in text
    assert "waited: delivered" in text, text
    before, after = map(int, text.split("chart points: ", 1)[1].split()[::2][:2])
    assert after > before, text  # a Live view in the kernel streams new points into its chart
    # The fetch cells showed live rows from the (fake) provider, not simulated ones.
    html = "".join(out.get("data", {}).get("text/html", "") for out in outputs)
    assert "coinbase" in html and "open-meteo" in html
    assert fake_api.count("coinbase") >= 1 and fake_api.count("open-meteo") >= 1


@pytest.mark.slow
def test_panel_serves_the_notebook(fake_api, tmp_path, page):
    env = fake_env(fake_api.url, RTDASH_PRICE_INTERVAL="500ms")
    with ServedApp(ROOT / "realtime_dashboard.ipynb", env=env, cwd=tmp_path) as app:
        assert requests.get(f"{app.url}/realtime_dashboard", timeout=30).status_code == 200
        page.goto(f"{app.url}/realtime_dashboard")
        page.locator(".bk-tab", has_text="Refresh").wait_for(timeout=30_000)
        assert "Traceback" not in page.content()
