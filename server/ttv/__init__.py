"""The transit-timing branch (stage 7b): TTV inference over a TTVFast model (period bins, evidence), its stored
transit times, and the hand-off from light curves to transit times.
"""
