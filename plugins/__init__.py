"""dicesearch's built-in plugins.

Each module here is a plugin registered through the ``dicesearch.plugins`` entry-point
group in pyproject.toml, exactly as a third-party package registers its own.
"""
