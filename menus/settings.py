"""The settings the menus share with the dashboard (app.settings)."""

from app.settings import Settings

__all__ = ["Settings"]
