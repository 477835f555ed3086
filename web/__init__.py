"""The browser and REST way in (FastAPI), a thin layer over app like menus/ (docs/architecture.md)."""
