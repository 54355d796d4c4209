"""The transient branch (Stage 7c): references, ZOGY difference imaging, candidates, cross-match, alerts.

See docs/transients.md. Pure numerical stages live in ``psf``, ``zogy`` and ``detect``; ``reference`` and
``stage`` wrap them with the store and the database; ``crossmatch`` and ``alerts`` hold the strategy objects
and the alert formats. The real/bogus classifier is ``classify`` (``score_triplets``).
"""
