"""The sidecar-injection webhook: pure pod mutation (``injection``) and its kopf server."""
