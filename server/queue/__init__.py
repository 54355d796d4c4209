"""The pipeline's task queues (Celery): each stage a task on one of four queues, in-process without a broker.

``celery_app`` configures Celery from the settings registry, ``tasks`` defines the task machinery and the
pipeline_fast and mcmc tasks, ``science`` the science_inference chain (light curves, period search, transit timing),
``slow`` the pipeline_slow stacks, ``reactive`` wires ingest to the chain, ``ops`` reads and manages the queues for
``openastro queue``. See docs/queue.md.
"""
