"""HTTP handlers, middleware and the typed keys that connect them to the app."""
