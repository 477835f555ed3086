"""MedAnomaly Workbench core: no user interface lives here (see menus/ for that)."""

__version__ = "0.1.0"
