"""Developer and CI tools that are not part of the host workflow (synthetic models and the like)."""
