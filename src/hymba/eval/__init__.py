"""Evaluation: the MQAR recall probe (``hymba.eval.mqar``), the lm-evaluation-harness adapter
(``hymba.eval.lm_eval_adapter``, needs the ``eval`` extra) and its runs on a checkpoint (``hymba.eval.harness``),
text completions (``hymba.eval.generate``). Import the submodules directly; this package imports none of them
so that ``lm_eval`` stays optional."""
