"""The pipeline's task queues (Celery): each stage a task on one of four queues, in-process without a broker.

``celery_app`` configures Celery from the settings registry, ``tasks`` defines the stage tasks, ``reactive`` wires
ingest to the stage chain, ``ops`` reads and manages the queues for ``openastro queue``. See docs/queue.md.
"""
