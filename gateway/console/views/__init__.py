"""The console's pages, one module each: ``PAGE`` (its navigation entry, if any) and
``add_routes(router)``."""
