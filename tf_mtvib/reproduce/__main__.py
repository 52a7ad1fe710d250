"""``python -m tf_mtvib.reproduce [mtl|vib|protocols] ...``: dispatch to the reproduction's own command line."""
import importlib
import sys

COMMANDS = {"mtl": "tf_mtvib.reproduce.mtl", "vib": "tf_mtvib.reproduce.vib",
            "protocols": "tf_mtvib.reproduce.protocols", "saturation": "tf_mtvib.reproduce.saturation",
            "mtcrl": "tf_mtvib.reproduce.mtcrl", "vmtl": "tf_mtvib.reproduce.vmtl",
            "fast": "tf_mtvib.reproduce.fast"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = argv.pop(0) if argv and argv[0] in COMMANDS else "mtl"
    if argv[:1] in (["-h"], ["--help"]) and name == "mtl" and not (sys.argv[1:2] == ["mtl"]):
        print(f"usage: python -m tf_mtvib.reproduce {{{','.join(COMMANDS)}}} [options]\n"
              "  mtl  the MTVIB paper's five models on MultiMNIST, MultiFashion and MTFL (default)\n"
              "  vib  Deep VIB on MNIST: beta sweep, Fig. 1 of Alemi et al. 2017\n"
              "  protocols  which FGSM protocol gives the paper's curves (on mtl's trained runs)\n"
              "  saturation  S_k and the masked (clipped-loss) FGSM on mtl's trained runs: the flat-curve hypothesis\n"
              "  mtcrl  MT-CRL's Multi-MNIST tables (Hu et al. 2022) on the pair-split Multi-MNIST\n"
              "  vmtl  VMTL's claims (Shen et al. 2021) on the digit domains\n"
              "  fast  the search that chooses the fast preset's schedule (MTVIB on MultiMNIST)")
        return 0
    return importlib.import_module(COMMANDS[name]).main(argv)


if __name__ == "__main__":
    sys.exit(main())
