"""Data: sources (class folders, split folders, ``.npz``, built-in) -> cache (decoded once per
node into a uint8 array file) -> batches (uint8 to the device; augmentation and normalisation
there)."""
from ..config import DataSpec
from .cache import cache_root, decode
from .loader import Augment, Batches, Images, to_model_input
from .scan import Scan, scan_class_folder
from .sources import Splits, check_num_classes, load_data, load_split_index, stratified_split

__all__ = ["DataSpec", "Splits", "load_data", "check_num_classes", "stratified_split", "scan_class_folder",
           "load_split_index", "decode", "Scan", "cache_root", "Images", "Batches", "Augment",
           "to_model_input"]
