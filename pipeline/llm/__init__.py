"""Calls to the model: the HTTP client, the endpoint pool, the runner, its limits and guards, the embedded model."""
