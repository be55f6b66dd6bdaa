"""Test-wide settings: under CI (``CI=true``) hypothesis draws the same examples every run, so a red CI
is reproducible; locally every run explores new examples."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, deadline=None)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")
