import torch, json, densenet, torch.nn as nn, copy
torch.manual_seed(0)
m = densenet.DenseNet3(10, 10, growth_rate=2).eval()
with torch.no_grad():
    for p in m.state_dict().values():
        if p.dtype.is_floating_point: p.copy_(torch.randn_like(p) * 0.5)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d): mod.running_var.abs_().add_(0.5)
x = torch.linspace(-1, 1, 2*3*32*32).reshape(2,3,32,32)
with torch.no_grad(): y = m(x)
torch.save(m, 'tiny-densenet-legacy.pth', _use_new_zipfile_serialization=False)
torch.save(m, 'tiny-densenet-zip.pth')
bad = copy.deepcopy(m); bad.trans1.conv1 = nn.Conv1d(4, 2, 1, bias=False)
torch.save(bad, 'tiny-densenet-conv1d.pth', _use_new_zipfile_serialization=False)
miss = copy.deepcopy(m); del miss.fc._parameters['bias']; miss.fc.bias = None
torch.save(miss, 'tiny-densenet-nobias.pth', _use_new_zipfile_serialization=False)
json.dump({'logits': [[round(v, 6) for v in r] for r in y.tolist()], 'input': 'linspace(-1, 1, 6144).reshape(2, 3, 32, 32)'}, open('tiny-densenet.golden.json','w'))
print(y)
