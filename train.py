#!/usr/bin/env python
"""Train an MTVIB model or a baseline: ``python train.py --dataset mtfl --model mtvib``.

A thin entry point; the logic lives in :mod:`tf_mtvib.train`
(``python -m tf_mtvib.train`` is the same command).
"""
import sys

from tf_mtvib.train import main

if __name__ == "__main__":
    sys.exit(main())
