import math, torch, torch.nn as nn, torch.nn.functional as F
class BottleneckBlock(nn.Module):
    def __init__(self, in_planes, out_planes, dropRate=0.0):
        super().__init__(); inter = out_planes * 4
        self.bn1 = nn.BatchNorm2d(in_planes); self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, inter, 1, bias=False); self.bn2 = nn.BatchNorm2d(inter)
        self.conv2 = nn.Conv2d(inter, out_planes, 3, padding=1, bias=False); self.droprate = dropRate
    def forward(self, x):
        out = self.conv1(self.relu(self.bn1(x))); out = self.conv2(self.relu(self.bn2(out)))
        return torch.cat([x, out], 1)
class TransitionBlock(nn.Module):
    def __init__(self, in_planes, out_planes, dropRate=0.0):
        super().__init__(); self.bn1 = nn.BatchNorm2d(in_planes); self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 1, bias=False); self.droprate = dropRate
    def forward(self, x): return F.avg_pool2d(self.conv1(self.relu(self.bn1(x))), 2)
class DenseBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, growth_rate, block, dropRate=0.0):
        super().__init__(); self.layer = nn.Sequential(*[block(in_planes + i*growth_rate, growth_rate, dropRate) for i in range(nb_layers)])
    def forward(self, x): return self.layer(x)
class DenseNet3(nn.Module):
    def __init__(self, depth, num_classes, growth_rate=12, reduction=0.5, bottleneck=True, dropRate=0.0):
        super().__init__(); in_planes = 2*growth_rate; n = (depth-4)//3//2
        self.conv1 = nn.Conv2d(3, in_planes, 3, padding=1, bias=False)
        self.block1 = DenseBlock(n, in_planes, growth_rate, BottleneckBlock); in_planes = in_planes + n*growth_rate
        self.trans1 = TransitionBlock(in_planes, int(math.floor(in_planes*reduction))); in_planes = int(math.floor(in_planes*reduction))
        self.block2 = DenseBlock(n, in_planes, growth_rate, BottleneckBlock); in_planes = in_planes + n*growth_rate
        self.trans2 = TransitionBlock(in_planes, int(math.floor(in_planes*reduction))); in_planes = int(math.floor(in_planes*reduction))
        self.block3 = DenseBlock(n, in_planes, growth_rate, BottleneckBlock); in_planes = in_planes + n*growth_rate
        self.bn1 = nn.BatchNorm2d(in_planes); self.relu = nn.ReLU(inplace=True); self.fc = nn.Linear(in_planes, num_classes); self.in_planes = in_planes
    def forward(self, x):
        out = self.trans2(self.block2(self.trans1(self.block1(self.conv1(x)))))
        out = self.relu(self.bn1(self.block3(out)))
        return self.fc(F.avg_pool2d(out, 8).view(-1, self.in_planes))
