"""TTV science kernels: TTVFast forward model, likelihood, priors, samplers, result files.

Runs on the server and frozen on volunteers' machines, so it imports nothing from
``server/`` (third-party packages only).  Entry point for one work unit:
:func:`app.ttv.task.run_ttv_task`.  Units and conventions: docs/ttv.md.
"""
