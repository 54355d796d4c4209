"""The distributed side: campaigns (TTV inference, stacks) and the executors that run their work units (local or
a real BOINC server), installing into a BOINC project and packaging the volunteer app's versions.

Sits above ``work_generator``, ``validator`` and ``assimilator``: it drives them, they never import it.
"""
