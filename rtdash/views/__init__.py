"""Panel components of the dashboard, one module per tab or strip."""
