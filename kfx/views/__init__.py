"""What the run report (kfx.report) and the UI (kfx.ui) both read and draw: run records and SVG charts."""
