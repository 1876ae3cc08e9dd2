"""The installed profiles (entry points), as the app loads them, for tests that parse
registrations without starting an app."""

from __future__ import annotations

from bridge.plugin import load_profiles

PROFILES = load_profiles()
#: A slug's form, and none a profile reserves (``continue``).
is_valid_slug = PROFILES.is_valid_slug
