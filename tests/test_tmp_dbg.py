import time, sys
import pytest
from tests.helpers import ServedApp, fake_env
@pytest.mark.parametrize("hooks,query", [("h3", "?metric=temperature"), ("h3", "?range=7d"), ("h3", "?tab=history&metric=price")])
def test_dbg(page, tmp_path, hooks, fake_api, query):
    failed = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    app = ServedApp(target="/tmp/dbg/realtime_dashboard.py", env=fake_env(fake_api.url, HOOKS=hooks, RTDASH_TILES="none", RTDASH_STORE=str(tmp_path / "x.duckdb")), cwd=tmp_path).wait_ready()
    try:
        page.goto(app.url + "/realtime_dashboard" + query)
        page.locator(".bk-tab").first.wait_for(timeout=20000)
        time.sleep(2)
        print("FAILED", hooks, query, len(failed), failed[:1])
    finally:
        app.stop()
