"""Federated learning simulation: federated data, partitioners, selection."""

from trustjax.federated.data import FederatedData
from trustjax.federated.partition import cluster_skew
from trustjax.federated.partition import dirichlet_label_skew
from trustjax.federated.partition import iid
from trustjax.federated.partition import kmeans
from trustjax.federated.partition import labels_per_client
from trustjax.federated.partition import quantity_skew
from trustjax.federated.selection import Cohort
from trustjax.federated.selection import select_clients
