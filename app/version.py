"""Version of the volunteer app's code (recorded in every result and checkpoint).

The BOINC app-version number (e.g. 1.00) is chosen at packaging time and lives in the physical
file names; this is the code version those files were built from.
"""

APP_VERSION = "0.1.0"
