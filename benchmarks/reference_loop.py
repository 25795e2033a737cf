"""Reference: one IDC / Acc-DD inner iteration as a plain per-class PyTorch loop, the yardstick of ``throughput.py``.

Written like the public IDC code (``condense.py``'s ``matchloss`` and inner loop, ``train.py``'s ``train_epoch``; Acc-DD reuses them) with nothing clever: a stock-layer ``nn.Module``
(:class:`PlainConvNet`) and its own SGD; per class one shared DSA draw on real + synthetic, ``autograd.grad`` of both halves, squared differences of the conv weights, ``loss.backward()`` and
one image step; then the network trains on ``n_data`` real images in whole minibatches, as the library's defaults do. Only the DSA transform comes from the library, so the equality check can
feed both paths the same draw; real data is held as IDC's ``ClassMemDataLoader`` holds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lightning_dd.augment import DSA, training_augmentation


@dataclass
class Settings:
    """Everything one inner iteration depends on (defaults: the benchmark's full workload)."""

    num_classes: int = 10
    depth: int = 3
    width: int = 128
    ipc: int = 10
    factor: int = 2
    batch_real: int = 64
    n_data: int = 500
    net_batch_size: int = 128
    augment: str = "color_crop_cutout"
    lr_img: float = 1e-2  # scaled by ipc / 10 as IDC's tune_lr_img does
    momentum_img: float = 0.5
    net_lr: float = 0.01
    net_momentum: float = 0.9
    net_weight_decay: float = 5e-4
    cutmix_p: float = 0.5
    seed: int = 0


class PlainConvNet(nn.Module):
    """ConvNet-D (instance norm, average pooling) of stock layers; one state dict loads into it and :class:`lightning_dd.nets.ConvNet`."""

    def __init__(self, channels: int, num_classes: int, image_size: tuple[int, int], depth: int, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        height, wide = image_size
        for d in range(depth):
            pad = 3 if (d == 0 and tuple(image_size) == (28, 28)) else 1
            layers += [
                nn.Conv2d(channels if d == 0 else width, width, 3, padding=pad),
                nn.GroupNorm(width, width, affine=True),
                nn.ReLU(inplace=True),
            ]
            height, wide = height + 2 * pad - 2, wide + 2 * pad - 2
            if min(height, wide) >= 2:
                layers.append(nn.AvgPool2d(2))
                height, wide = height // 2, wide // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * height * wide, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def random_images(
    n: int, channels: int, height: int, width: int, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uniformly random uint8 images ``[n, C, H, W]`` with balanced labels ``0..num_classes-1``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, height, width), generator=generator, dtype=torch.uint8), torch.arange(
        n
    ) % num_classes


def decode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """IDC's ``decode_zoom``: ``factor x factor`` tiles per image, each upsampled (tile-major; undivided sides padded with grey 0.5)."""
    if factor == 1:
        return images
    h, w = images.shape[-2:]
    if h % factor:
        images = F.pad(images, (0, factor - h % factor, 0, factor - h % factor), value=0.5)
    side = math.ceil(h / factor)
    crops = [
        images[:, :, i * side : (i + 1) * side, j * side : (j + 1) * side] for i in range(factor) for j in range(factor)
    ]
    return F.interpolate(torch.cat(crops), size=(h, w), mode="bilinear", align_corners=False)


def match_loss(
    net: nn.Module, img_real: torch.Tensor, img_syn: torch.Tensor, lab_real: torch.Tensor, lab_syn: torch.Tensor
) -> torch.Tensor:
    """IDC's ``matchloss`` (``grad``, ``mse``): squared gradient differences of the conv weights (no biases, norms or classifier)."""
    criterion, params = nn.CrossEntropyLoss(), list(net.parameters())
    g_real = [g.detach() for g in torch.autograd.grad(criterion(net(img_real), lab_real), params)]
    g_syn = torch.autograd.grad(criterion(net(img_syn), lab_syn), params, create_graph=True)
    return sum(torch.sum((gr - gs) ** 2) for gr, gs in zip(g_real, g_syn) if gr.ndim > 2)


def class_loss(
    net: nn.Module,
    dsa: DSA,
    real: torch.Tensor,
    stored: torch.Tensor,
    c: int,
    draw: torch.Tensor,
    factor: int,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> torch.Tensor:
    """The matching loss of class ``c``: ``real`` normalised images, ``stored`` synthetic pixels in [0, 1], one ``[1, 11]`` DSA ``draw`` for both."""
    n = real.shape[0]
    img_aug = dsa.apply(torch.cat([real, (decode(stored, factor) - mean) / std]), draw)
    labels = torch.full((img_aug.shape[0],), c, dtype=torch.long, device=real.device)
    return match_loss(net, img_aug[:n], img_aug[n:], labels[:n], labels[n:])


def rand_bbox(height: int, width: int, lam: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """CutMix box covering about ``1 - lam`` of the image (Yun et al. 2019; IDC's ``rand_bbox``)."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy, cx = (int(v * s) for v, s in zip(torch.rand(2, generator=generator).tolist(), (height, width)))
    return max(cy - ch // 2, 0), min(cy + ch // 2, height), max(cx - cw // 2, 0), min(cx + cw // 2, width)


class ReferenceDistiller:
    """One outer iteration of IDC-style distillation: the data (uint8 ``images`` ``[N, C, H, W]``, ``labels``), the synthetic images, one network."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, settings: Settings, device: torch.device | str
    ) -> None:
        s = self.settings = settings
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(s.seed)
        pixels = images.float().div(255.0)
        self.mean = pixels.mean(dim=(0, 2, 3)).view(1, -1, 1, 1).to(self.device)
        self.std = pixels.std(dim=(0, 2, 3)).view(1, -1, 1, 1).to(self.device)
        # IDC's ClassMemDataLoader: normalised float images in memory, indices per class.
        self.images = ((pixels.to(self.device) - self.mean) / self.std).contiguous()
        del pixels
        self.labels = labels.to(self.device)
        self.class_indices = [torch.nonzero(self.labels == c).flatten() for c in range(s.num_classes)]
        channels, height, width = images.shape[1:]
        self.dsa = DSA(s.augment)
        # The network update's augmentation, as the authors' train_epoch: colour and flip plus ONE of
        # crop / scale / rotate per minibatch, cutout dropped under CutMix.
        self.net_dsa = training_augmentation(s.augment, spatial="single", cutmix_p=s.cutmix_p)
        init = torch.rand(s.num_classes * s.ipc, channels, height, width, generator=self.generator)
        self.synset = init.to(self.device).requires_grad_(True)
        self.optim_img = torch.optim.SGD([self.synset], lr=s.lr_img * s.ipc / 10.0, momentum=s.momentum_img)
        self.net = PlainConvNet(channels, s.num_classes, (height, width), s.depth, s.width).to(self.device).train()
        self.optim_net = torch.optim.SGD(
            self.net.parameters(), lr=s.net_lr, momentum=s.net_momentum, weight_decay=s.net_weight_decay
        )

    def matching_part(self) -> float:
        """Match every class, one synthetic-image step per class; returns the summed loss."""
        s = self.settings
        loss_total = 0.0
        for c in range(s.num_classes):
            pool = self.class_indices[c]
            real = self.images[
                pool[torch.randperm(pool.numel(), generator=self.generator)[: s.batch_real].to(self.device)]
            ]
            draw = self.dsa.sample(1, self.generator)
            loss = class_loss(
                self.net,
                self.dsa,
                real,
                self.synset[c * s.ipc : (c + 1) * s.ipc],
                c,
                draw,
                s.factor,
                self.mean,
                self.std,
            )
            loss_total += loss.item()
            self.optim_img.zero_grad()
            loss.backward()
            self.optim_img.step()
        return loss_total

    def net_update(self) -> None:
        """Train the network on random real images in whole minibatches until ``n_data`` are seen (IDC's ``train_epoch`` with ``n_data``)."""
        s, net, criterion, generator = self.settings, self.net, nn.CrossEntropyLoss(), self.generator
        if s.n_data == 0:
            return
        count = (
            math.ceil(s.n_data / s.net_batch_size) * s.net_batch_size
        )  # their loop stops after the batch that reaches n_data
        idx = torch.randperm(self.images.shape[0], generator=generator)[:count].to(self.device)
        x_all, y_all = self.images[idx], self.labels[idx]
        for start in range(0, x_all.shape[0], s.net_batch_size):
            x, y = x_all[start : start + s.net_batch_size], y_all[start : start + s.net_batch_size]
            with torch.no_grad():
                x = self.net_dsa(x, generator)
            if torch.rand(1, generator=generator).item() < s.cutmix_p and x.shape[0] > 1:
                lam = torch.rand(1, generator=generator).item()  # Beta(1, 1)
                perm = torch.randperm(x.shape[0], generator=generator).to(self.device)
                y0, y1, x0, x1 = rand_bbox(x.shape[2], x.shape[3], lam, generator)
                x = x.clone()
                x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
                lam = 1.0 - (y1 - y0) * (x1 - x0) / float(x.shape[2] * x.shape[3])
                output = net(x)
                loss = criterion(output, y) * lam + criterion(output, y[perm]) * (1.0 - lam)
            else:
                loss = criterion(net(x), y)
            self.optim_net.zero_grad()
            loss.backward()
            self.optim_net.step()
