"""The one shared live stream per server process."""

from .poller import Poller, SourceStatus, Subscription
from .runtime import Runtime, get_runtime, stop_all

__all__ = ["Poller", "Runtime", "SourceStatus", "Subscription", "get_runtime", "stop_all"]
