"""The sync engine: plan (pure), push, mirror, and the cycle that ties them together."""
