"""Measures the TDeVries PyTorch port of ENAS (github.com/TDeVries/enas_pytorch) at our bench's sizes:
its shared-CNN training step as its ``train_shared_cnn`` loop runs it (sample an architecture with the
controller under ``no_grad``, forward, cross-entropy, backward, ``clip_grad_norm_`` 5, Nesterov SGD
step with momentum 0.9 and weight decay, the accuracy and loss read back). Run as a script with the
port's Python::

    python port_bench.py SRC BATCH LAYERS FILTERS SECONDS THREADS

``SRC`` is the port's source tree, patched to run on a CPU (``.cuda()`` -> the device; its in-place
skip addition made out-of-place, which PyTorch >= 1.0 needs for the backward pass). Inputs are
synthetic N(0, 1) images [B, 3, 32, 32] and uniform labels; no data pipeline is timed (nor in ours).
Prints one JSON line. It imports nothing from tf_rlnas: the port is never our dependency.
"""

import json
import os
import sys
import time


def main() -> None:
    src, batch, layers, filters, seconds, threads = sys.argv[1:7]
    batch, layers, filters, seconds, threads = int(batch), int(layers), int(filters), float(seconds), int(threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch
    import torch.nn as nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    sys.path.insert(0, os.path.abspath(src))
    from models.controller import Controller
    from models.shared_cnn import SharedCNN

    # train.py's defaults: macro search, 6 branches, keep_prob 0.9, LSTM 64 x 1, tanh constant 1.5,
    # skip target 0.4 / weight 0.8, lr 0.05, weight decay 2.5e-4, gradient bound 5
    controller = Controller(search_for="macro", search_whole_channels=True, num_layers=layers, num_branches=6,
                            out_filters=filters, lstm_size=64, lstm_num_layers=1, tanh_constant=1.5,
                            temperature=None, skip_target=0.4, skip_weight=0.8)
    net = SharedCNN(num_layers=layers, num_branches=6, out_filters=filters, keep_prob=0.9)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=2.5e-4)
    data = [(torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))) for _ in range(4)]

    def step(i):
        images, labels = data[i % len(data)]
        with torch.no_grad():
            controller()
        net.zero_grad()
        pred = net(images, controller.sample_arc)
        loss = nn.CrossEntropyLoss()(pred, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        torch.mean((torch.max(pred, 1)[1] == labels).float()).item()
        loss.item()

    for i in range(3):  # warm-up
        step(i)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        step(n)
        n += 1
    dt = time.perf_counter() - t0
    print(json.dumps({"lib": "enas_pytorch", "torch": torch.__version__, "threads": threads, "batch": batch,
                      "layers": layers, "filters": filters, "steps": n, "images_per_s": n * batch / dt,
                      "ms_per_step": 1e3 * dt / n}))


if __name__ == "__main__":
    main()
