"""The run infrastructure both entry points share (docs/ARCHITECTURE.md): the lifecycle of a run
(resume, stops, logging, checkpoints), its directory, the plan of ticks, the command line, numerics,
signals and stopping, seeding, multi-process set-up, evaluation and fidelity metrics.

Nothing here knows a method or a dataset by name, and nothing is imported here: ``datafree.run.signals``
must load without torch.
"""
