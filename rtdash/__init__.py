"""rtdash: a real-time dashboard of prices and weather on the HoloViz stack."""

__version__ = "0.1.0"
