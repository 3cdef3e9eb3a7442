"""Canonical JSON and short hashes of settings: the keys of descriptor folders and of fits."""

import hashlib
import json


def canonical_json(obj):
    """One text per settings value whatever the key order (rule params, hashes)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def settings_hash(obj, length=12):
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]
