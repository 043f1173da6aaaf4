"""Flax NNX models: text classifiers, MLP, tokenizers."""

from trustjax.models.classifiers import BagOfEmbeddings
from trustjax.models.classifiers import EncoderLayer
from trustjax.models.classifiers import MLP
from trustjax.models.classifiers import SelfAttention
from trustjax.models.classifiers import TransformerClassifier
from trustjax.models.factory import build_model
from trustjax.models.factory import MODEL_NAMES
from trustjax.models.losses import accuracy
from trustjax.models.losses import classifier_loss_fn
from trustjax.models.tokenizer import BPEEncoder
from trustjax.models.tokenizer import gpt2_tokenizer
from trustjax.models.tokenizer import gpt2_vocab_files
