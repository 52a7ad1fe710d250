"""UWL: GS's shared network with Kendall et al.'s learned homoscedastic-uncertainty weighting."""
from . import FamilySpec

SPEC = FamilySpec(name="uwl", description="shared network, learned uncertainty weights",
                  default_weighting="uncertainty", builder="tf_mtvib.families.gs:build",
                  search=("learning_rate",))
