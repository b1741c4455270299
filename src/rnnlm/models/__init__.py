"""Recurrent models as input layer -> recurrent encoder -> head, with engines chosen by name."""

from rnnlm.models import engine_cpu, engine_triton  # noqa: F401  (register the cpu and triton engines)
from rnnlm.models.encoder import RecurrentEncoder, from_torch_state_dict, to_torch_state_dict
from rnnlm.models.engines import ENGINES, engine_names, get_engine, register_engine, resolve_engine_name
from rnnlm.models.heads import LMHead
from rnnlm.models.inputs import TokenInput
from rnnlm.models.lm import RNNLM, count_parameters, upgrade_state_dict
from rnnlm.models.state import State, detach_state, select_state

__all__ = [
    "ENGINES",
    "LMHead",
    "RNNLM",
    "RecurrentEncoder",
    "State",
    "TokenInput",
    "count_parameters",
    "detach_state",
    "engine_names",
    "from_torch_state_dict",
    "get_engine",
    "register_engine",
    "resolve_engine_name",
    "select_state",
    "to_torch_state_dict",
    "upgrade_state_dict",
]
