"""The run, from set-up to the last checkpoint.

run.py          train(): a fresh, resumed or fine-tuned run set up and handed to the loop
loop.py         Trainer: step, validate, save, restore, run (the loop itself)
budget.py       the run's clock and limits: stop now? time for a validation?
optimization.py the optimiser and the learning-rate schedule
validation.py   the validation set: a capped part of the split, or all of it
meters.py       the loss read back from the device, the speed, a run far too slow
reporting.py    the hooks the loop reports through; metrics.jsonl, samples.txt, TensorBoard
sizing.py       the model size for a time budget, from this machine's measured speed
distributed.py  data-parallel training over processes (torchrun)
rundir.py       the run directory: created, checked, never overwritten by accident
runlock.py      one process per run directory
"""
