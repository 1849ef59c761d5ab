"""``chipsim explore``: multi-objective search over learning rule, precision, dataflow and chip (Optuna)."""
from .driver import explore  # noqa: F401
