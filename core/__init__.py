"""The neutral core beneath every layer: errors, registries and metrics.

Nothing here imports app, models or menus; everything else may import it
(docs/architecture.md has the layers).
"""
