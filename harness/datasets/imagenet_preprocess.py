"""MLPerf ResNet-50 preprocessing: RGB, short side to 256 (area), centre crop 224, mean subtraction.

Crops are kept as uint8 NCHW (what the area resize produces anyway) so caches are 4x smaller;
``to_model_input`` turns them into the float32, mean-subtracted input the model takes.
"""

import numpy as np
from PIL import Image

CROP = 224
RESIZE_SHORT_SIDE = 256  # 224 / 0.875, as the MLPerf reference does
MEANS = np.array([123.68, 116.78, 103.94], dtype=np.float32).reshape(1, 3, 1, 1)
# Identifies the preprocessing in cache keys: change it whenever the arithmetic changes.
PREPROCESS_VERSION = "mlperf-resnet50-area256-crop224-u8nchw-v1"


def preprocess(image: Image.Image) -> np.ndarray:
    """One decoded image -> uint8 array [3, 224, 224] (RGB, resized, centre-cropped)."""
    image = image.convert("RGB")
    width, height = image.size
    scale = RESIZE_SHORT_SIDE / min(width, height)
    size = (max(CROP, round(width * scale)), max(CROP, round(height * scale)))
    # BOX filtering is area averaging, the equivalent of OpenCV's INTER_AREA used by MLPerf.
    image = image.resize(size, Image.Resampling.BOX)
    left = (size[0] - CROP) // 2
    top = (size[1] - CROP) // 2
    crop = np.asarray(image.crop((left, top, left + CROP, top + CROP)), dtype=np.uint8)
    return np.ascontiguousarray(crop.transpose(2, 0, 1))


def to_model_input(crops: np.ndarray) -> np.ndarray:
    """uint8 crops [N, 3, 224, 224] -> float32 model input with the MLPerf means subtracted."""
    return crops.astype(np.float32) - MEANS
