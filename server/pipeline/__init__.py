"""Orchestration across branches: the stage runner (records each stage's outcome per observation, idempotent)
and the end-to-end demo.
"""
