"""Adapt torchvision stems to 32x32 inputs, as ppuda's `adjust_net(large_input=False)`.

Two of ppuda's changes have no effect because they set `stride` on a container (ShuffleNetV2's
`conv1` Sequential, GoogLeNet's `conv1` BasicConv2d); we set it on the convolution inside, as
intended. Stride never changes the graph or the tensor shapes, so predictions are unaffected.
A 3x3 stem is left as is (ppuda's crop of it fails).
"""

from __future__ import annotations

import logging

from torch import nn
from torchvision import models

log = logging.getLogger(__name__)


def _crop_stem_to_3x3(conv: nn.Conv2d) -> None:
    """Center-crop the kernel to 3x3 (7 -> rows 2..4) and make the conv stride 1, padding 1."""
    k = conv.weight.shape[2:]
    if tuple(k) != (3, 3):
        (oy, ox), (ry, rx) = [(d - 3) // 2 for d in k], [(d - 3) % 2 for d in k]
        w = conv.weight.detach()[:, :, oy: k[0] - oy - ry, ox: k[1] - ox - rx].clone()
        conv.weight = nn.Parameter(w, requires_grad=conv.weight.requires_grad)
    conv.kernel_size, conv.padding, conv.stride = (3, 3), (1, 1), (1, 1)


def adjust_for_small_images(model: nn.Module) -> nn.Module:
    """Keep early feature maps large enough for 32x32 images; also traces the GHN at 32."""
    model.expected_input_sz = 32
    if isinstance(model, models.ResNet):
        _crop_stem_to_3x3(model.conv1)
        model.maxpool = nn.Identity()
    elif isinstance(model, models.DenseNet):
        _crop_stem_to_3x3(model.features[0])
        model.features[3] = nn.Identity()
    elif isinstance(model, (models.MobileNetV2, models.MobileNetV3)):
        for m in model.features[0:5].modules():
            if isinstance(m, nn.Conv2d):
                m.stride = 1
    elif isinstance(model, models.VGG):
        for i, m in enumerate(model.features[0:10]):
            if isinstance(m, nn.MaxPool2d):
                model.features[i] = nn.Identity()
    elif isinstance(model, models.AlexNet):
        model.features[0].stride = 1
        model.features[2] = nn.Identity()
    elif isinstance(model, models.MNASNet):
        model.layers[0].stride = 1
    elif isinstance(model, models.ShuffleNetV2):
        model.conv1[0].stride = 1
        model.maxpool = nn.Identity()
    elif isinstance(model, models.GoogLeNet):
        model.conv1.conv.stride = 1
        model.maxpool1 = nn.Identity()
    elif isinstance(model, models.ConvNeXt):
        model.features[0][0].stride = 1
    else:
        log.warning("no 32x32 adjustment for %s: only the traced input size changes",
                    type(model).__name__)
    return model
