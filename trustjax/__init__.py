"""trustjax: trustworthy machine learning in JAX.

Pillars: ``trustjax.privacy`` (DP-SGD), ``trustjax.audit`` (privacy auditing),
``trustjax.federated`` (FL simulation), ``trustjax.fairness`` and
``trustjax.distill``; shared pieces in ``trustjax.models``, ``trustjax.data``,
``trustjax.sweeps`` and ``trustjax.experiment``.
"""

__version__ = "0.1.0"
