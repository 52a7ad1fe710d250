"""Reproductions: ``python -m tf_mtvib.reproduce mtl`` (the MTVIB paper's Tables III-V and
Fig. 5) and ``python -m tf_mtvib.reproduce vib`` (Deep VIB on MNIST, Alemi et al. 2017)."""
