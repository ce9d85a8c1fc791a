"""Writers of small but real dataset files for tests (images here; per-dataset layouts beside it)."""
