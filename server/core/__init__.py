"""Foundations every other part of the server stands on: the settings registry, admins' config files, the
application context (database + object store), the content-addressed store, the database models and migrations,
time scales (UTC/TDB, BJD), and the data contract shared with BOINC's daemons.

Imports nothing else of the server; everything else may import it.
"""
