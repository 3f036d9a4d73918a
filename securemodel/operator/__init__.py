"""The kopf operator: one module of handlers per kind, settings in :mod:`.settings`."""
