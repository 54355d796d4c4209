"""The light-curve branch (stage 7a): light curves from calibrated photometry (BJD_TDB), period search
(Lomb-Scargle with false-alarm probabilities) and transit mid-time extraction.
"""
