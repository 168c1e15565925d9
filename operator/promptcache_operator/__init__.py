"""promptcache_operator: the kopf operator and the sidecar-injection webhook.

Import name ``promptcache_operator`` (the folder is ``operator/``): a top-level module
called ``operator`` would shadow the standard library. Run it with ``promptcache
operator`` (or ``python -m promptcache_operator``), never as ``kopf run FILE``.

* ``crd``: the PromptPolicy CRD, generated from the shared policy schema.
* ``rendering``: policy -> rendered ConfigMap and status (plain data).
* ``handlers``: the kopf handlers (policies, referenced ConfigMaps, startup).
* ``deployments``: Deployment annotations -> pod template annotations.
* ``webhook.injection`` / ``webhook.server``: the pod mutation and its kopf server.
* ``settings``, ``kube``, ``runtime``, ``cli``: configuration, API client, shared state.
"""
