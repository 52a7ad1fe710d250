"""MT-CRL (Hu et al., NeurIPS 2022, §3): disentangled modules, a task-to-module graph, G-IRM.

The MMoE network (``mmoe.py``) with the softmax gates replaced by the graph
``A = sigmoid(theta)`` (:class:`tf_mtvib.modular.CausalGraph`), and the loss of
eq. (7): the task risks on the train environment (eq. 4's ``R_t``), plus
``lambda_decor`` times eq. (2) (the modules' layer loss), plus eq. (3) (the
graph's layer loss), plus ``lambda_girm`` times G-IRM Var (eq. 9) or Norm
(eq. 8) over the train and valid environments (:class:`tf_mtvib.modular.GraphIRMPenalty`).

The paper gives none of the lambdas, nor the learning rate, the epochs or the
batch size; the defaults below are this library's starting point, to be chosen
on a development pair shuffle (its issue), and every run records them.
"""
from ..hparams import HParam
from . import FamilySpec
from ._lenet import LENET_DATASETS, MODULAR_HPARAMS, _choice

SPEC = FamilySpec(
    name="mtcrl", description="MT-CRL: modules + causal graph + G-IRM (Hu et al. 2022)",
    default_weighting="fixed", datasets=LENET_DATASETS, needs=("environment",),
    terms=f"{__name__}:terms", risk_environments=f"{__name__}:risk_environments",
    hparams={**MODULAR_HPARAMS,
             "aggregation": HParam("concat", "f_t's input: 'concat' ([A_t1 Z_1, ..., A_tK Z_K], d wide) or 'sum' "
                                             "(sum_i A_ti Z_i, d/K wide, as §3.1 writes it)",
                                   _choice("concat", "sum"), "MODE"),
             "disentangle": HParam("decor", "the disentangling regulariser: 'decor' (eq. 2, the paper's) or "
                                            "'beta_vae' (Table 3's alternative: the modules as a beta-VAE's latent, "
                                            "Higgins et al. 2017; --beta-vae, --lambda-vae)",
                                   _choice("decor", "beta_vae"), "KIND"),
             "beta_vae": HParam(4.0, "beta of the beta-VAE (--disentangle beta_vae): the KL's weight beside the "
                                     "reconstruction (Higgins et al. 2017; this library's choice, the paper gives none)"),
             "lambda_vae": HParam(1.0, "weight of the beta-VAE loss per pixel, (reconstruction + beta KL) / pixels "
                                       "(--disentangle beta_vae; this library's choice)"),
             "lambda_decor": HParam(0.01, "weight of the decorrelation loss, eq. (2) (a sum over K(K-1)/2 module pairs of (d/K)^2 squared correlations)"),
             "lambda_sps": HParam(0.01, "weight of the graph's L1 sparsity, eq. (3)"),
             "lambda_bal": HParam(0.1, "weight of the graph's balance entropy, eq. (3)"),
             "girm": HParam("var", "invariance penalty: 'var' (eq. 9), 'norm' (eq. 8), 'irm' (the IRM baseline, "
                                   "eq. 6: gradients with respect to A_t and f_t, f_t updated) or 'none'",
                            _choice("var", "norm", "irm", "none"), "FORM"),
             "lambda_girm": HParam(1.0, "lambda of eq. (7), the weight of G-IRM"),
             "risk_on": HParam("train", "the task risks read the 'train' environment only (the paper) or 'all' "
                                        "(train + valid, as the baselines)", _choice("train", "all"), "ENV")})

#: The environments (the extra ``environment``): train and valid (tf_mtvib.datasets.pairs)
TRAIN_ENV, VALID_ENV = 0, 1


def build(dataset_spec, hp):
    from ..modular import GRAPH_LAYER, CausalGraph
    from ._lenet import modular_network

    graph = CausalGraph(len(dataset_spec.tasks), hp["num_modules"], hp["aggregation"], hp["lambda_sps"],
                        hp["lambda_bal"], name=GRAPH_LAYER)
    return modular_network(dataset_spec, hp, lambda h, z: graph(z))


def terms(dataset_spec, hp):
    """G-IRM over the train and valid environments (none with ``girm="none"``)."""
    if hp["girm"] == "none" or hp["lambda_girm"] == 0:
        return []
    from ..modular import GraphIRMPenalty

    return [GraphIRMPenalty(hp["girm"], (TRAIN_ENV, VALID_ENV), weight=hp["lambda_girm"])]


def risk_environments(hp):
    return (TRAIN_ENV,) if hp["risk_on"] == "train" else ()
