"""The transient branch (Stage 7c): difference imaging, detection, real/bogus classification, cross-match, alerts."""
