"""Plugin packs the tests load through plugins.manager (each folder is one pack; never imported directly)."""
