"""Data: TFDS builders and local readers for real data sets, batching, and
the embedded synthetic fallback.

TFDS builders (`Clinc150`, `TinyShakespeare`, `Bold`) are prepared into
ArrayRecord files and read with `as_data_source()`: no TensorFlow needed.
"""

from trustjax.data.batching import batch_iterator
from trustjax.data.batching import gather_batch
from trustjax.data.bold import Bold
from trustjax.data.bold import load_bold
from trustjax.data.clinc150 import Clinc150
from trustjax.data.clinc150 import load_clinc150
from trustjax.data.reader import load_text_classification
from trustjax.data.shakespeare import char_sequences
from trustjax.data.shakespeare import CharVocab
from trustjax.data.shakespeare import load_shakespeare
from trustjax.data.shakespeare import parse_speeches
from trustjax.data.shakespeare import TinyShakespeare
from trustjax.data.synthetic import synthetic_intents
from trustjax.data.types import Split
from trustjax.data.types import TextClassificationData
from trustjax.data.vocab import tokenize_words
from trustjax.data.vocab import WordVocab
