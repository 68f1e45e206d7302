"""The bundled demo model: a small CNN for scikit-learn's 8x8 digits, and its fixed data split.

The data ships inside scikit-learn (``sklearn.datasets.load_digits``), so the demo needs no
download and no ``../shared``. Raw pixels are integers 0..16; the model takes
``pixels / 16`` as float32 NCHW ``(N, 1, 8, 8)``, i.e. ``onnxprune eval --scale 16 --layout nchw``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

#: Raw digits pixels are 0..16; the model sees ``pixels / PIXEL_SCALE``.
PIXEL_SCALE = 16.0
#: Fractions of the 1,797 digits held out as the test and the validation split (stratified).
TEST_FRACTION = 0.2
VAL_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class DigitsSplit:
    """The fixed train/val/test split: uint8 images ``(N, 8, 8)`` (0..16) and int64 labels.

    The model is trained on ``train`` only; ``val`` is for search rewards (never trained on),
    ``test`` for the final numbers (never seen by a search).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def digits_split() -> DigitsSplit:
    """Return scikit-learn's digits as a fixed, stratified 60/20/20 train/val/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)
    labels = digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=VAL_FRACTION / (1 - TEST_FRACTION), random_state=SPLIT_SEED, stratify=y_rest)
    c = np.ascontiguousarray
    return DigitsSplit(c(x_train), y_train, c(x_val), y_val, c(x_test), y_test)


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, 8, 8)`` pixels -> float32 ``(N, 1, 8, 8)`` model input (the eval preprocessing)."""
    return torch.from_numpy(images.astype(np.float32)[:, None] / np.float32(PIXEL_SCALE))


class DigitsCNN(nn.Module):
    """conv-BN-ReLU x2, max-pool, conv-BN-ReLU, global average pool, linear (10 classes)."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 32), num_classes: int = 10) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(1, w1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.conv2 = nn.Conv2d(w1, w2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(w2)
        self.conv3 = nn.Conv2d(w2, w3, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(w3)
        self.linear = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for ``(N, 1, 8, 8)`` inputs."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


def train_digits_cnn(split: DigitsSplit, generator: torch.Generator, *, epochs: int = 30,
                     batch_size: int = 32, lr: float = 3e-3) -> DigitsCNN:
    """Train :class:`DigitsCNN` on the train split (CPU, deterministic for a given generator).

    Args:
        split: The data.
        generator: Seeds the initial weights and the shuffling.
        epochs: Passes over the training split.
        batch_size: Samples per step.
        lr: Adam learning rate (cosine-annealed to 0).

    Returns:
        The trained model in eval mode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        model = DigitsCNN()
    x, y = to_input(split.train_images), torch.from_numpy(split.train_labels)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent of ``model`` (eval mode) on uint8 digits."""
    predictions = model.eval()(to_input(images)).argmax(dim=1).numpy()
    return 100.0 * float(np.mean(predictions == labels))
