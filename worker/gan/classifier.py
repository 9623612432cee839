"""Image quality without downloaded weights: a small classifier trained on the data set itself.

For `digits`: does a cgan sample show the class it was asked for (accuracy), does
an infogan categorical code pick out one class (purity), and how far apart are
real and generated images in the classifier's feature space (Fréchet distance).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.gan.gan import GAN

FEATURES = 64
BATCH = 128


class DigitClassifier(nn.Module):
    """Two conv layers and a linear head; `features` is the penultimate layer (for the Fréchet distance)."""

    def __init__(self, channels: int, size: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2) if size > 8 else nn.Identity(),  # keep it cheap at 16-64 px
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(32 * 16, FEATURES),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, num_classes)

    def features(self, x: Tensor) -> Tensor:
        features: Tensor = self.body(x)
        return features

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.head(self.body(x))
        return logits


def train_classifier(
    x: Tensor, y: Tensor, seed: int = 0, epochs: int = 40, holdout: float = 0.2
) -> tuple[DigitClassifier, float]:
    """Train on (1 − holdout) of the images; return the classifier (eval mode) and its held-out accuracy.

    Deterministic in `seed`, and leaves the global RNG as it found it.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=generator)
    cut = int(len(x) * (1 - holdout))
    train_idx, test_idx = order[:cut], order[cut:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitClassifier(x.shape[1], x.shape[-1], int(y.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        for batch in torch.randperm(cut, generator=generator).split(BATCH):
            index = train_idx[batch]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    accuracy = float((predict(model, x[test_idx]) == y[test_idx]).float().mean())
    return model, accuracy


@torch.no_grad()
def predict(model: DigitClassifier, images: Tensor) -> Tensor:
    return torch.cat([model(chunk).argmax(1) for chunk in images.split(512)])


def class_accuracy(model: DigitClassifier, images: Tensor, asked: Tensor) -> float:
    """Fraction of generated images the classifier labels as the class they were generated for."""
    return float((predict(model, images) == asked.cpu()).float().mean())


def code_purity(model: DigitClassifier, images: Tensor, codes: Tensor, num_classes: int) -> float:
    """Σ over code values of the majority class count, over N: 1.0 when each code value is one class.

    (Codes may share a class: purity measures that a code picks out a class, not a one-to-one map.)
    """
    predicted = predict(model, images).numpy()
    codes_np = codes.cpu().numpy()
    table = np.zeros((int(codes_np.max()) + 1, num_classes), dtype=np.int64)
    np.add.at(table, (codes_np, predicted), 1)
    return float(table.max(axis=1).sum() / len(codes_np))


def code_nmi(model: DigitClassifier, images: Tensor, codes: Tensor) -> float:
    """Normalised mutual information between code and predicted class: unlike purity, 0 when every
    image is called the same class (purity is then 1)."""
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(codes.cpu().numpy(), predict(model, images).numpy()))


@torch.no_grad()
def frechet_distance(model: DigitClassifier, real: Tensor, fake: Tensor) -> float:
    """‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2(Σ_r Σ_f)^½) in the classifier's feature space (FID's formula)."""
    a = torch.cat([model.features(c) for c in real.split(512)]).double().numpy()
    b = torch.cat([model.features(c) for c in fake.split(512)]).double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((Σ_r Σ_f)^½) = Σ √λ over the eigenvalues of Σ_r Σ_f (real and ≥ 0 up to rounding).
    root_trace = np.sqrt(np.clip(np.linalg.eigvals(cov_a @ cov_b).real, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * root_trace)


def evaluate_labelled_samples(
    gan: GAN, model: DigitClassifier, real: Tensor, num_classes: int, n: int = 1000, seed: int = 0
) -> dict[str, float]:
    """cgan: "class_accuracy"; infogan: "code_purity" and "code_nmi" of the first categorical code; both: "frechet"."""
    inputs = gan.fixed_inputs(n, torch.Generator().manual_seed(seed))
    images = gan.generate(inputs).float().cpu()
    result = {"frechet": frechet_distance(model, real, images)}
    if "labels" in inputs:
        result["class_accuracy"] = class_accuracy(model, images, inputs["labels"])
    elif "categorical" in inputs:
        result["code_purity"] = code_purity(model, images, inputs["categorical"][:, 0], num_classes)
        result["code_nmi"] = code_nmi(model, images, inputs["categorical"][:, 0])
    return result
