"""assimilator package."""
