"""Flax NNX models: text classifiers, MLP, losses, GPT-2 BPE tokenizer,
GPT-2 and a frozen BERT sentence encoder."""

from trustjax.models.attention import SelfAttention
from trustjax.models.attention import attention_bias
from trustjax.models.bag import BagOfEmbeddings
from trustjax.models.bert import BertConfig
from trustjax.models.bert import BertEncoder
from trustjax.models.bert_io import load_bert
from trustjax.models.bert_io import minilm_path
from trustjax.models.bert_io import save_bert
from trustjax.models.factory import MODEL_NAMES
from trustjax.models.factory import build_model
from trustjax.models.generate import generate
from trustjax.models.generate import sample_logits
from trustjax.models.gpt2 import GPT2Config
from trustjax.models.gpt2 import GPT2LMHeadModel
from trustjax.models.gpt2 import causal_lm_loss
from trustjax.models.gpt2 import causal_lm_token_nll
from trustjax.models.gpt2 import select_layers
from trustjax.models.gpt2_io import load_gpt2
from trustjax.models.gpt2_io import save_gpt2
from trustjax.models.losses import accuracy
from trustjax.models.losses import classifier_logits
from trustjax.models.losses import classifier_loss_fn
from trustjax.models.losses import evaluate
from trustjax.models.mlp import MLP
from trustjax.models.pooling import masked_mean, word_dropout_mask
from trustjax.models.sentence import WordPieceEncoder
from trustjax.models.sentence import bucket_length
from trustjax.models.sentence import load_sentence_encoder
from trustjax.models.sentence import sentence_embeddings
from trustjax.models.tokenizer import BPEEncoder
from trustjax.models.tokenizer import EOS_ID
from trustjax.models.tokenizer import GPT2_VOCAB_SIZE
from trustjax.models.tokenizer import gpt2_tokenizer
from trustjax.models.tokenizer import gpt2_vocab_files
from trustjax.models.tokenizer import load_tokenizer
from trustjax.models.transformer import EncoderLayer
from trustjax.models.transformer import TransformerClassifier
