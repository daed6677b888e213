"""rtdash: live prices and weather.

panel serve realtime_dashboard.py [--args --price-interval 5s ...]
python realtime_dashboard.py [--port 5006] [--price-interval 5s ...]
"""

import sys

from rtdash.app import TITLE, create_app, serve_main
from rtdash.server import stop_loop_on_signals

if __name__ == "__main__":
    stop_loop_on_signals()  # SIGTERM and Ctrl+C end the serving; serve_main then writes the history and closes it
    serve_main(sys.argv[1:])
elif __name__.startswith("bokeh_app"):  # panel serve
    create_app(argv=sys.argv[1:]).servable(title=TITLE)
