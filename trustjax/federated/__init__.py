"""Federated learning simulation: federated data, partitioners, selection."""

from trustjax.federated.data import FederatedData
from trustjax.federated.partition import cluster_skew
from trustjax.federated.partition import dirichlet_label_skew
from trustjax.federated.partition import heavy_tailed_dirichlet
from trustjax.federated.partition import iid
from trustjax.federated.partition import kmeans
from trustjax.federated.partition import labels_per_client
from trustjax.federated.partition import quantity_skew
from trustjax.federated.selection import Cohort
from trustjax.federated.selection import select_clients
from trustjax.federated.algorithms import Algorithm
from trustjax.federated.algorithms import fedavg
from trustjax.federated.algorithms import fedopt
from trustjax.federated.algorithms import fedprox
from trustjax.federated.algorithms import scaffold
from trustjax.federated.rounds import client_batch_indices
from trustjax.federated.rounds import local_steps
from trustjax.federated.rounds import make_client_mesh
from trustjax.federated.rounds import run_round
from trustjax.federated.rounds import RowSparse
from trustjax.federated.dp_fedavg import dp_fedavg
from trustjax.federated.dp_fedavg import DPFedAvgConfig
from trustjax.federated.dp_fedavg import poisson_cohort
from trustjax.federated.continual import ContinualStore
from trustjax.federated.continual import uniform_arrivals
from trustjax.federated.stacked import run_round_stacked
