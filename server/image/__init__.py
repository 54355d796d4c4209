"""The image branch (stages 1-2 and 5-6 of the pipeline map): plate solving, reference catalogs, photometric
calibration, reprojection, background normalisation, co-addition and stack planning, and the FITS helpers they share.

Takes FITS frames from the object store; gives WCS headers, zero points, calibrated sources and deep stacks.
"""
