"""Cross-modal metrics: retrieval (Recall@k, median rank), canonical correlations, clustering."""

from mmkeras.metrics.cca import CanonicalCorrelation
from mmkeras.metrics.cca import LinearCCA
from mmkeras.metrics.cca import canonical_correlations_numpy
from mmkeras.metrics.clustering import adjusted_rand_index
from mmkeras.metrics.clustering import clustering_report
from mmkeras.metrics.clustering import kmeans
from mmkeras.metrics.clustering import normalized_mutual_information
from mmkeras.metrics.retrieval import class_ranks
from mmkeras.metrics.retrieval import instance_ranks
from mmkeras.metrics.retrieval import random_baseline
from mmkeras.metrics.retrieval import retrieval_report
from mmkeras.metrics.retrieval import summarize_ranks
from mmkeras.metrics.linear_probe import ridge_probe
from mmkeras.metrics.bleu import corpus_bleu
from mmkeras.metrics.invariance_probes import collect_outputs
from mmkeras.metrics.invariance_probes import invariance_report
