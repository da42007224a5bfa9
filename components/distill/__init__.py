"""Distillation step (``python -m components.distill``): ODE-pair initialisation (``ode_init``) then
self-forcing DMD (``dmd``) into a 4-step chunk-causal student; the run itself is ``student``. Imports nothing
heavy, so the pipeline compiler can import ``component.py`` with only kfp installed."""
