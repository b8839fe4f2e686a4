"""``canon serve``: an HTTP API and web view over a zoo."""
