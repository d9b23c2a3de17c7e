"""ResNet basic blocks (ResNet-18/34) with inference-mode BatchNorm, in plain PyTorch."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BasicBlock", "randomize_bn_", "bn_eval"]


def randomize_bn_(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    """Trained-looking BN parameters and running statistics (not the identity defaults)."""
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0.0, 0.3)
        bn.running_mean.normal_(0.0, 0.3)
        bn.running_var.uniform_(0.5, 1.5)
    return bn


def bn_eval(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """BatchNorm with its running statistics whatever the module's mode (never batch stats)."""
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); 3x3 convs without bias, padding 1;
    shortcut = bn(conv1x1(x, stride)) when the stride or width changes, else x. BN uses its
    running statistics (inference), eps 1e-5."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = randomize_bn_(nn.BatchNorm2d(out_ch))
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = randomize_bn_(nn.BatchNorm2d(out_ch))
        self.down = None
        if stride != 1 or in_ch != out_ch:
            self.down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                      randomize_bn_(nn.BatchNorm2d(out_ch)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [N, C_in, H, W] -> [N, C_out, H / stride, W / stride]
        out = F.relu(bn_eval(self.conv1(x), self.bn1))
        out = bn_eval(self.conv2(out), self.bn2)
        short = x if self.down is None else bn_eval(self.down[0](x), self.down[1])
        return F.relu(out + short)
