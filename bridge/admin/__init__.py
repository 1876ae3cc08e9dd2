"""The admin: pages under ``/admin`` and the JSON API under ``/admin/api`` (:mod:`.api`)."""
