"""The data layer: list a split, decode it once, cache it, split, normalise, augment.

Images are decoded once per (files, decode parameters) into a uint8 N×H×W×C array cached as
``.npy``; everything after that (split, augmentation, normalisation) works on tensors.
"""

from training.data import cifar  # noqa: F401  (registers the cifar10 layout)
from training.data._crop import silhouette_box
from training.data._errors import DataError
from training.data._imageset import ImageSet, LoadReport
from training.data._layouts import LAYOUTS, LayoutLoader
from training.data._load import SPLITS, load_split
from training.data._preprocessing import Preprocessing
from training.data._sources import IMAGE_EXTS, Listing, SourceItem
from training.data._split import kfold_splits, stratified_group_split, stratified_split
from training.data._tensors import normalize_batch, to_nchw
from training.data.augment import BatchAugment

__all__ = [
    "IMAGE_EXTS",
    "LAYOUTS",
    "SPLITS",
    "BatchAugment",
    "DataError",
    "ImageSet",
    "LayoutLoader",
    "Listing",
    "LoadReport",
    "Preprocessing",
    "SourceItem",
    "kfold_splits",
    "load_split",
    "normalize_batch",
    "silhouette_box",
    "stratified_group_split",
    "stratified_split",
    "to_nchw",
]
