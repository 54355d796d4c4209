"""work_generator package."""
