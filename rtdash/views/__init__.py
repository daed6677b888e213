"""Panel components of the dashboard, one module per tab or strip."""

import contextlib
from collections.abc import Iterator

import panel as pn


@contextlib.contextmanager
def one_message() -> Iterator[None]:
    """Send the model changes made inside as one message to the page, once the page has loaded.

    Until then the changes go out one by one: Panel drops the changes held in ``pn.io.hold()`` while a session is
    not yet connected (the document is sent whole at connection), yet a page that has pulled the document but not
    yet said it is ready would never get them.
    """
    if pn.state.loaded:
        with pn.io.hold():
            yield
    else:
        yield
