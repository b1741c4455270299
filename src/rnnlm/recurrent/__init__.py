"""Recurrent encoders (RNN, GRU, LSTM) and the engines that compute them."""

from rnnlm.recurrent import engine_cpu, engine_triton  # noqa: F401, E402  (register the cpu and triton engines)
