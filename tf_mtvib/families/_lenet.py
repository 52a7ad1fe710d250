"""What the LeNet families share (MT-CRL, Hu et al. 2022): their common hyper-parameters and datasets.

Not a family itself (not in :data:`tf_mtvib.families.PACKAGE_FAMILIES`). Families may share a
hyper-parameter by declaring the same :class:`HParam`; these are declared once here.
"""
from ..hparams import HParam

#: The data sets the LeNet trunk takes (tf_mtvib.datasets.pairs)
LENET_DATASETS = ("pairmnist", "pairmnist64")


def _choice(*allowed):
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"choose one of: {', '.join(allowed)}")
        return text
    parse.__name__ = "choice"   # argparse's message names the type
    return parse


LENET_DROPOUT = HParam(0.0, "channel dropout after MultiLeNet's second convolution (Sener & Koltun use 0.5; "
                            "0 keeps the training forward pass deterministic)")
NUM_MODULES = HParam(8, "K, the modules (experts); MT-CRL App. E: 8", int, "K")
MODULES_DIM = HParam(128, "d, the modules' total width, split evenly: each module has d/K units (MT-CRL App. E: 128)",
                     int, "D")
PREDICTOR = HParam("mlp", "f_t: 'mlp' (the paper's one-layer MLP: FC hidden + ReLU + FC) or 'linear'",
                   _choice("mlp", "linear"), "KIND")
PREDICTOR_HIDDEN = HParam(50, "hidden units of the 'mlp' predictor (MultiLeNet's task head: 50)", int, "N")
MODULE_TRUNKS = HParam("shared", "'shared': one LeNet trunk with K module heads (the same complexity as one "
                                 "network); 'separate': K LeNet trunks, one per module", _choice("shared", "separate"),
                       "KIND")

MODULAR_HPARAMS = {"lenet_dropout": LENET_DROPOUT, "num_modules": NUM_MODULES, "modules_dim": MODULES_DIM,
                   "module_trunks": MODULE_TRUNKS, "predictor": PREDICTOR, "predictor_hidden": PREDICTOR_HIDDEN}


def module_dim(hp) -> int:
    """Each module's width, d/K (d must be a multiple of K)."""
    k, d = hp["num_modules"], hp["modules_dim"]
    if k < 1 or d % k:
        raise ValueError(f"modules_dim ({d}) must be a positive multiple of num_modules ({k})")
    return d // k


def _beta_vae_modules(image, h, hp, separate: bool):
    """MT-CRL's Table 3 row "beta-VAE" (in place of eq. 2): the K modules are the latent z (K * d/K units) of a
    beta-VAE on the trunk's features, ``lambda_vae / pixels * (reconstruction + beta_vae * KL)`` with a
    Gaussian posterior (the linear head of :class:`tf_mtvib.layers.GaussianLatent`) and an MLP decoder
    (:class:`tf_mtvib.modular.VAEModules`); in inference the modules are the posterior mean."""
    from ..hparams import InapplicableHParam
    from ..layers import GaussianLatent
    from ..modular import MODULES_LAYER, VAEModules, pixel_count

    if separate:
        raise InapplicableHParam("--disentangle beta_vae takes one trunk (--module-trunks shared): its latent is "
                                 "read from one set of features")
    k, m = hp["num_modules"], module_dim(hp)
    beta = hp["lambda_vae"] * hp["beta_vae"] / pixel_count(image.shape)
    z = GaussianLatent(k * m, beta, head="linear", name="module_latent")(h)
    return VAEModules(k, m, hp["lambda_vae"], name=MODULES_LAYER)([z, image])


def modular_network(dataset_spec, hp, combine):
    """image -> LeNet trunk -> Modules -> ``combine(h, z)`` (the tasks' inputs) -> TaskPredictors -> logits."""
    from ..blocks import image_input
    from ..modular import MODULES_LAYER, PREDICTORS_LAYER, Modules, TaskPredictors, lenet_trunk

    image = image_input(dataset_spec)
    h = lenet_trunk(image, dropout=hp["lenet_dropout"])
    separate = hp["module_trunks"] == "separate"
    trunks = [h] + [lenet_trunk(image, prefix=f"module{i}_", dropout=hp["lenet_dropout"])
                    for i in range(1, hp["num_modules"])] if separate else h
    if hp.get("disentangle", "decor") == "beta_vae":
        z = _beta_vae_modules(image, h, hp, separate)
    else:
        z = Modules(hp["num_modules"], module_dim(hp), hp.get("lambda_decor", 0.0), separate,
                    name=MODULES_LAYER)(trunks)
    inputs = combine(h, z)       # MMoE's gates read the first trunk's features
    logits = TaskPredictors([t.num_classes for t in dataset_spec.tasks], hp["predictor"], hp["predictor_hidden"],
                            name=PREDICTORS_LAYER)(inputs)
    return image, dict(zip(dataset_spec.task_names, logits))
