"""Getting data in: safe FITS metadata, archival table parsers, the ingest service and site API keys.

``server.ingest.service.ingest_path`` is the entry point; see docs/ingest.md.
"""
