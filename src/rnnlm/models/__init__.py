"""Recurrent language models: scratch cells written out in PyTorch ops, or torch's fused RNN/GRU/LSTM."""

from rnnlm.models.cells import SCRATCH_CELLS, GRUScratch, LSTMScratch, RNNScratch, ScratchLayer, project_inputs
from rnnlm.models.rnnlm import RNNLM, State, convert_state_dict, count_parameters, detach_state, select_state

__all__ = [
    "RNNLM",
    "SCRATCH_CELLS",
    "GRUScratch",
    "LSTMScratch",
    "RNNScratch",
    "ScratchLayer",
    "State",
    "convert_state_dict",
    "count_parameters",
    "detach_state",
    "project_inputs",
    "select_state",
]
