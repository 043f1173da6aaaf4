"""Fairness: counterfactual text, group and counterfactual metrics, prediction
sensitivity, WEAT/CEAT, and gender bias of generated text."""

# Counterfactual text (helper "distill").
from trustjax.fairness.counterfactual import CounterfactualSwapper
from trustjax.fairness.counterfactual import female_words
from trustjax.fairness.counterfactual import load_gender_pairs
from trustjax.fairness.counterfactual import load_name_pairs
from trustjax.fairness.counterfactual import male_words
from trustjax.fairness.counterfactual import token_permutation
# Generation bias metrics (helper "distill").
from trustjax.fairness.generation import disparity
from trustjax.fairness.generation import embedding_polarity
from trustjax.fairness.generation import evaluate_generations
from trustjax.fairness.generation import gender_direction
from trustjax.fairness.generation import group_polarity
from trustjax.fairness.generation import polarity_labels
from trustjax.fairness.generation import vader_compound
from trustjax.fairness.generation import word_polarity_counts
# Group metrics (helper "fairness").
from trustjax.fairness.group import BootstrapCI
from trustjax.fairness.group import GroupMetrics
from trustjax.fairness.group import bootstrap_ci
from trustjax.fairness.group import demographic_parity_difference
from trustjax.fairness.group import demographic_parity_ratio
from trustjax.fairness.group import equal_opportunity_difference
from trustjax.fairness.group import equal_opportunity_ratio
from trustjax.fairness.group import equalized_odds_difference
from trustjax.fairness.group import equalized_odds_ratio
from trustjax.fairness.group import group_metrics
# Counterfactual token fairness (helper "fairness").
from trustjax.fairness.cf_metrics import CounterfactualResult
from trustjax.fairness.cf_metrics import counterfactual_fairness
from trustjax.fairness.cf_metrics import counterfactual_gaps
from trustjax.fairness.cf_metrics import summarize_gaps
# Prediction sensitivity (helper "fairness").
from trustjax.fairness.sensitivity import APSResult
from trustjax.fairness.sensitivity import EmbeddingModel
from trustjax.fairness.sensitivity import accumulated_prediction_sensitivity
from trustjax.fairness.sensitivity import from_nnx
from trustjax.fairness.sensitivity import prediction_sensitivity
# WEAT / CEAT and contextual embeddings (helper "fairness").
from trustjax.fairness.ceat import CEATResult
from trustjax.fairness.ceat import MetaResult
from trustjax.fairness.ceat import ceat_samples
from trustjax.fairness.ceat import random_effects
from trustjax.fairness.ceat import resolve_words
from trustjax.fairness.embeddings import bold_sentences
from trustjax.fairness.embeddings import contextual_embeddings
from trustjax.fairness.embeddings import find_sentences
from trustjax.fairness.embeddings import gpt2_embed_fn
from trustjax.fairness.embeddings import locate_word
from trustjax.fairness.weat import WeatResult
from trustjax.fairness.weat import WeatTest
from trustjax.fairness.weat import load_weat_tests
from trustjax.fairness.weat import weat_effect_size
from trustjax.fairness.weat import weat_p_value
