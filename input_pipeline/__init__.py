"""Input pipelines: datasets by name, TFDS builders, Grain iterators, transforms, graph padding."""

from input_pipeline.datasets import DATASETS, VIEWS, Dataset, open_dataset
from input_pipeline.pipeline import create_train_iterator, gather_rows, make_global
from input_pipeline.tokenizer import tokenizer_fingerprint
from input_pipeline.transforms import check_data_config

__all__ = ["DATASETS", "VIEWS", "Dataset", "check_data_config", "create_train_iterator",
           "gather_rows", "make_global", "open_dataset", "tokenizer_fingerprint"]
