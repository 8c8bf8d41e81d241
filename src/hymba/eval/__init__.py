"""Evaluation: the MQAR recall probe (``hymba.eval.mqar``) and the lm-evaluation-harness adapter
(``hymba.eval.lm_eval_adapter``, needs the ``eval`` extra). Import the submodules directly; this package
imports neither so that ``lm_eval`` stays optional."""
