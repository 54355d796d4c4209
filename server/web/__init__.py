"""The HTTP side: the FastAPI application (health, observations, authenticated uploads)."""
